"""Event indexes: one for dashboards sliced by API key (api_key, timestamp); two fewer that other indexes cover
(connector_id, timestamp is the start of connector_id, timestamp, id; user_id the start of user_id, timestamp).
Every recorded event writes each index, so the execution path has one index less to maintain."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('connectors', '0002_kibana_config_fields'),
        ('usage', '0006_logs_tab_indexes'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name='executionevent',
            name='event_connector_time',
        ),
        migrations.AlterField(
            model_name='executionevent',
            name='api_key',
            field=models.ForeignKey(blank=True, db_index=False, help_text='The API key the call was made with, if any.', null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='connectors.apikey'),
        ),
        migrations.AlterField(
            model_name='executionevent',
            name='user',
            field=models.ForeignKey(blank=True, db_index=False, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL),
        ),
        migrations.AddIndex(
            model_name='executionevent',
            index=models.Index(fields=['api_key', 'timestamp'], name='event_api_key_time'),
        ),
    ]
