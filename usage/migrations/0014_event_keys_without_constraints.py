"""The event table's foreign keys to the user and the API key go: an event outlives both, as it outlives its space.

With them, the database refused the event of a call whose user or API key was deleted while it ran (or while its
event waited in the spool for the database to come back): the execution went unrecorded. They also cost every
recorded event a lookup of the user's and the key's rows at commit, each row locked until then
(docs/PERFORMANCE.md, "The event log's foreign keys"). The columns, their indexes and their values stay; deleting a
user or a key still empties the fields in their stored events (SET_NULL, which Django does, not the database).

On PostgreSQL the event table is partitioned (usage/models/partitions.py): dropping the parent's constraint drops each
partition's with it, a catalog change that takes no longer whatever the table holds. On SQLite Django rebuilds the
table, copying its rows, once per field.
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("connectors", "0003_spaces"),
        ("usage", "0013_one_summary_trigger_per_event"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AlterField(
            model_name="executionevent",
            name="api_key",
            field=models.ForeignKey(blank=True, db_constraint=False, db_index=False,
                                    help_text="The API key the call was made with, if any.", null=True,
                                    on_delete=django.db.models.deletion.SET_NULL, related_name="+",
                                    to="connectors.apikey"),
        ),
        migrations.AlterField(
            model_name="executionevent",
            name="user",
            field=models.ForeignKey(blank=True, db_constraint=False, db_index=False, null=True,
                                    on_delete=django.db.models.deletion.SET_NULL, related_name="+",
                                    to=settings.AUTH_USER_MODEL),
        ),
    ]
