from django.apps import apps
from django.core.management.base import CommandError
from django.db import transaction
from django.db.models import Q

from connectors.audit.audited_command import AuditedCommand
from connectors.crypto import SecretUnavailable, is_encrypted_with_newest_key, reencrypt_with_newest_key

# Every encrypted secret of a connector: the API key and the PKI material for mutual TLS (docs/KIBANA.md 1.2).
SECRET_FIELDS = ("encrypted_api_key", "encrypted_certificate_data", "encrypted_private_key_data", "encrypted_ca_data")
# Every other model holding secrets under the same keys, by app label and model name (the connectors app does not
# import usage): alert channels' targets (a webhook URL carries a token) and signing secrets.
ENCRYPTED = (
    ("connectors", "Connector", "connector", SECRET_FIELDS),
    ("governance", "AlertChannel", "alert channel", ("target_encrypted", "secret_encrypted")),
)


class Command(AuditedCommand):
    help = (
        "Re-encrypt every stored secret (connector API keys, PKI certificates, keys and CAs; alert channels' targets "
        "and signing secrets) with the newest key of CONNECTORS_ENCRYPTION_KEYS. Idempotent: secrets already under "
        "the newest key are left alone."
    )

    def handle(self, *args, **options):
        rotated = current = 0
        with transaction.atomic():
            for app_label, model_name, described, fields in ENCRYPTED:
                model = apps.get_model(app_label, model_name)
                with_secrets = Q()
                for name in fields:
                    with_secrets |= ~Q(**{name: ""})
                for instance in model.objects.select_for_update().filter(with_secrets):
                    changed = []
                    for name in fields:
                        token = getattr(instance, name)
                        if not token:
                            continue
                        if is_encrypted_with_newest_key(token):
                            current += 1
                            continue
                        try:
                            setattr(instance, name, reencrypt_with_newest_key(token))
                        except SecretUnavailable as exc:
                            raise CommandError(
                                f"{described} {instance.pk} ({instance.name}): {exc}; nothing was changed"
                            ) from None
                        changed.append(name)
                    if changed:
                        instance.save(update_fields=changed)
                        rotated += len(changed)
        self.stdout.write(f"Re-encrypted {rotated} secret(s); {current} already used the newest key.")
