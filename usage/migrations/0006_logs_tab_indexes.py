"""Indexes of the Logs tab (usage/dashboards/logs.py, which states the query plan).

event_connector_time_id serves "one connector's events in a range, ORDER BY timestamp DESC, id DESC LIMIT 51,
after a (timestamp, id) cursor"; event_user_connector_time serves the same for a user limited to their own calls.
"""

from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('usage', '0005_event_user_time'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddIndex(
            model_name='executionevent',
            index=models.Index(fields=['connector_id', 'timestamp', 'id'], name='event_connector_time_id'),
        ),
        migrations.AddIndex(
            model_name='executionevent',
            index=models.Index(fields=['user', 'connector_id', 'timestamp', 'id'], name='event_user_connector_time'),
        ),
    ]
