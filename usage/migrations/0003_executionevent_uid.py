"""A unique id per event, so that events replayed from the spool (usage/recording/spool.py) are never counted twice.

Added without a default first (every existing row keeps NULL, which a unique index allows any number of times),
then given its Python default and the unique index: one default for all existing rows would collide.
"""

import uuid

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("usage", "0002_rollup_summaries")]

    operations = [
        migrations.AddField(
            model_name="executionevent",
            name="uid",
            field=models.UUIDField(editable=False, null=True),
        ),
        migrations.AlterField(
            model_name="executionevent",
            name="uid",
            field=models.UUIDField(default=uuid.uuid4, editable=False, null=True, unique=True),
        ),
    ]
