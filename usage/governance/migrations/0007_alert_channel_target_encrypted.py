"""Alert channels' targets stored encrypted (a webhook URL is a secret: a Slack webhook's path is its token), under
CONNECTORS_ENCRYPTION_KEYS like connector API keys. Existing targets are encrypted in place; going back decrypts
them."""

from django.db import migrations, models


def encrypt_targets(apps, schema_editor):
    from connectors.crypto import encrypt_secret

    AlertChannel = apps.get_model("governance", "AlertChannel")
    for channel in AlertChannel.objects.all().only("pk", "target"):
        AlertChannel.objects.filter(pk=channel.pk).update(target_encrypted=encrypt_secret(channel.target.strip()))


def decrypt_targets(apps, schema_editor):
    from connectors.crypto import decrypt_secret

    AlertChannel = apps.get_model("governance", "AlertChannel")
    for channel in AlertChannel.objects.all().only("pk", "target_encrypted"):
        target = decrypt_secret(channel.target_encrypted) if channel.target_encrypted else ""
        AlertChannel.objects.filter(pk=channel.pk).update(target=target)


class Migration(migrations.Migration):

    dependencies = [
        ("governance", "0006_spaces"),
    ]

    operations = [
        migrations.AddField(
            model_name="alertchannel",
            name="target_encrypted",
            field=models.TextField(default="", editable=False),
            preserve_default=False,
        ),
        migrations.RunPython(encrypt_targets, decrypt_targets),
        # A default first, so that going back can add the column again to a table that has rows.
        migrations.AlterField(
            model_name="alertchannel",
            name="target",
            field=models.CharField(default="", max_length=2048),
        ),
        migrations.RemoveField(
            model_name="alertchannel",
            name="target",
        ),
    ]
