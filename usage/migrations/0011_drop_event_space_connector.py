"""The event index (space_id, connector_id) goes: no query needs it any more, and every recorded event wrote it.

It served the list of connectors a space left events for (``SELECT DISTINCT connector_id WHERE space_id = %s``),
which now asks the hourly totals about the few connectors a page names instead (usage/space_scope.py). Every other
query of a space's events names a connector, a user or an API key and a time range, served by event_connector_time_id,
event_user_time or event_api_key_time (the space a filter on their rows), or only a time range (event_time: the
Kibana export of one space, the part-hours of a space budget's catch-up, usage/governance/pages/consumption.py).

On PostgreSQL the event table is partitioned (usage/models/partitions.py): dropping the parent's index drops each
partition's with it, in one statement that locks the table for as long as the drop takes (no rebuild).
"""

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ("usage", "0010_rollups_by_space_and_api_key"),
    ]

    operations = [
        migrations.RemoveIndex(model_name="executionevent", name="event_space_connector"),
    ]
