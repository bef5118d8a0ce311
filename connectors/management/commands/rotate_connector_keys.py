from django.core.management.base import CommandError
from django.db import transaction
from django.db.models import Q

from connectors.audit.audited_command import AuditedCommand
from connectors.crypto import SecretUnavailable, is_encrypted_with_newest_key, reencrypt_with_newest_key
from connectors.models import Connector

# Every encrypted secret of a connector: the API key and the PKI material for mutual TLS (docs/KIBANA.md 1.2).
SECRET_FIELDS = ("encrypted_api_key", "encrypted_certificate_data", "encrypted_private_key_data", "encrypted_ca_data")


class Command(AuditedCommand):
    help = (
        "Re-encrypt every stored connector secret (API key, PKI certificate, key and CA) with the newest key of "
        "CONNECTORS_ENCRYPTION_KEYS. Idempotent: secrets already under the newest key are left alone."
    )

    def handle(self, *args, **options):
        rotated = current = 0
        with_secrets = Q()
        for name in SECRET_FIELDS:
            with_secrets |= ~Q(**{name: ""})
        with transaction.atomic():
            for connector in Connector.objects.select_for_update().filter(with_secrets):
                changed = []
                for name in SECRET_FIELDS:
                    token = getattr(connector, name)
                    if not token:
                        continue
                    if is_encrypted_with_newest_key(token):
                        current += 1
                        continue
                    try:
                        setattr(connector, name, reencrypt_with_newest_key(token))
                    except SecretUnavailable as exc:
                        raise CommandError(
                            f"connector {connector.pk} ({connector.name}): {exc}; nothing was changed"
                        ) from None
                    changed.append(name)
                if changed:
                    connector.save(update_fields=changed)
                    rotated += len(changed)
        self.stdout.write(f"Re-encrypted {rotated} secret(s); {current} already used the newest key.")
