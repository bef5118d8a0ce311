"""A budget or rate limit counts the executions of its own space only (README "Spaces"; RuleSet in
usage/governance/enforcement/admission.py). Until now a connector, user or API-key rule counted its subject's calls in
every space.

A rule of an API key, or of a stored connector, made in another space than the key's or the connector's (the
budgets page of one space could name any space's key) would from now on count nothing: it moves to the space of its
key or connector, where those calls are made. Counters are the rule's own (by its id), so nothing used in the
current period is lost. Rules of preconfigured connectors and of users stay where they were made.
"""

from django.conf import settings
from django.db import migrations, models

RULES = ("Budget", "RateLimit")


def move_rules_to_their_subjects_space(apps, schema_editor):
    api_key_model = apps.get_model("connectors", "ApiKey")
    connector_model = apps.get_model("connectors", "Connector")
    for name in RULES:
        rules = apps.get_model("governance", name).objects
        key_spaces = dict(api_key_model.objects.filter(
            pk__in=rules.filter(scope="api_key").values("api_key_id")).values_list("pk", "space_id"))
        for key_id, space_id in key_spaces.items():
            rules.filter(scope="api_key", api_key_id=key_id).exclude(space_id=space_id).update(space_id=space_id)
        connector_spaces = dict(connector_model.objects.filter(
            pk__in=rules.filter(scope="connector").values("connector_id")).values_list("pk", "space_id"))
        for connector_id, space_id in connector_spaces.items():
            rules.filter(scope="connector", connector_id=connector_id).exclude(space_id=space_id).update(
                space_id=space_id)


class Migration(migrations.Migration):

    dependencies = [
        ("connectors", "0003_spaces"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
        ("governance", "0007_alert_channel_target_encrypted"),
    ]

    operations = [
        migrations.RunPython(move_rules_to_their_subjects_space, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="budget",
            name="user",
            field=models.ForeignKey(blank=True, help_text="Scope user: every execution by this user in this space, with any API key and on any connector.", null=True, on_delete=models.deletion.CASCADE, related_name="+", to=settings.AUTH_USER_MODEL),
        ),
        migrations.AlterField(
            model_name="ratelimit",
            name="user",
            field=models.ForeignKey(blank=True, help_text="Scope user: every execution by this user in this space, with any API key and on any connector.", null=True, on_delete=models.deletion.CASCADE, related_name="+", to=settings.AUTH_USER_MODEL),
        ),
    ]
