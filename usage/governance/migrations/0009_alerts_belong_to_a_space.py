"""An alert belongs to the space of the rule that raised it (README "Spaces"): it shows on that space's alerts page
and goes to that space's channels only. Until now an alert went to every space's channels, and one about a
preconfigured connector (in every space) showed in every space.

Existing alerts get the space of the rule their key names (``budget:<id>:…``, ``ratelimit:<id>:…``,
``errors:<id>:…``); one whose rule is gone, the space of its stored connector, else ``default``.
"""

import django.db.models.deletion
from django.db import migrations, models

RULE_OF_KEY = {"budget": "Budget", "ratelimit": "RateLimit", "errors": "ErrorRateRule"}


def give_alerts_their_rules_space(apps, schema_editor):
    alert_model = apps.get_model("governance", "Alert")
    connector_spaces = dict(apps.get_model("connectors", "Connector").objects.values_list("pk", "space_id"))
    rule_spaces = {prefix: dict(apps.get_model("governance", name).objects.values_list("pk", "space_id"))
                   for prefix, name in RULE_OF_KEY.items()}
    moved: dict[str, list[int]] = {}
    for pk, key, connector_id in alert_model.objects.values_list("pk", "key", "connector_id").iterator():
        prefix, _, rest = key.partition(":")
        rule_id = rest.partition(":")[0]
        space_id = None
        if prefix in rule_spaces and rule_id.isdigit():
            space_id = rule_spaces[prefix].get(int(rule_id))
        space_id = space_id or connector_spaces.get(connector_id) or "default"
        if space_id != "default":
            moved.setdefault(space_id, []).append(pk)
    for space_id, ids in moved.items():
        for start in range(0, len(ids), 500):
            alert_model.objects.filter(pk__in=ids[start : start + 500]).update(space_id=space_id)


class Migration(migrations.Migration):

    dependencies = [
        ("connectors", "0003_spaces"),
        ("governance", "0008_rules_count_their_space"),
        ("spaces", "0002_id_help_text"),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name="alert",
            name="alert_newest",
        ),
        migrations.AddField(
            model_name="alert",
            name="space",
            field=models.ForeignKey(db_index=False, default="default", on_delete=django.db.models.deletion.CASCADE,
                                    related_name="+", to="spaces.space"),
        ),
        migrations.AddIndex(
            model_name="alert",
            index=models.Index(fields=["space", "-raised_at"], name="alert_space_newest"),
        ),
        migrations.RunPython(give_alerts_their_rules_space, migrations.RunPython.noop),
    ]
