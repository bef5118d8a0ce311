"""Connectors and API keys belong to a space; every existing one goes into ``default`` (README "Spaces")."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("connectors", "0002_kibana_config_fields"),
        ("spaces", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="connector",
            name="space",
            field=models.ForeignKey(default="default", on_delete=django.db.models.deletion.PROTECT,
                                    related_name="connectors", to="spaces.space"),
        ),
        migrations.AddField(
            model_name="apikey",
            name="space",
            field=models.ForeignKey(default="default", on_delete=django.db.models.deletion.PROTECT,
                                    related_name="api_keys", to="spaces.space"),
        ),
        migrations.AddField(
            model_name="apikey",
            name="connector_ids",
            field=models.JSONField(blank=True, default=list,
                                   help_text="The connectors the key may use; empty: every connector of its space."),
        ),
        migrations.AddField(
            model_name="apikey",
            name="expires_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
