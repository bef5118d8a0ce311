"""The index of "My usage" (/usage/me/, usage/dashboards/my_usage.py): one user's events in a range, across every
connector, grouped by connector and API key (WHERE user_id = %s AND timestamp >= %s AND timestamp < %s)."""

from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('connectors', '0001_initial'),
        ('usage', '0004_event_cost'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddIndex(
            model_name='executionevent',
            index=models.Index(fields=['user', 'timestamp'], name='event_user_time'),
        ),
    ]
