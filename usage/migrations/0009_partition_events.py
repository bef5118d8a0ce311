"""The event table becomes partitioned by day on PostgreSQL (usage/models/partitions.py), online
(usage/operations/partition_conversion.py), and the event's uid becomes unique with its timestamp.

On PostgreSQL the uid's new unique key is built on the partitioned twin while the app keeps recording into the
original table; building it on the original table would lock out its writers for as long as the index takes.
On SQLite the table stays as it is, with the same unique key. Not atomic: the conversion commits step by step.
"""

import uuid

from django.db import migrations, models

UID_FIELD = models.UUIDField(default=uuid.uuid4, editable=False, null=True)
UID_TIME = models.UniqueConstraint(fields=("uid", "timestamp"), name="event_uid_time")


def forwards(apps, schema_editor):
    from usage.operations.partition_conversion import convert_to_partitioned

    connection = schema_editor.connection
    if connection.vendor == "postgresql":
        convert_to_partitioned(connection)  # builds event_uid_time on the partitioned table
        return
    model = apps.get_model("usage", "ExecutionEvent")
    old_field = model._meta.get_field("uid")
    new_field = UID_FIELD.clone()
    new_field.set_attributes_from_name("uid")
    new_field.model = model
    schema_editor.alter_field(model, old_field, new_field)
    schema_editor.add_constraint(model, UID_TIME)


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("usage", "0008_event_space"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(model_name="executionevent", name="uid", field=UID_FIELD),
                migrations.AddConstraint(model_name="executionevent", constraint=UID_TIME),
            ],
            database_operations=[migrations.RunPython(forwards, migrations.RunPython.noop)],
        ),
    ]
