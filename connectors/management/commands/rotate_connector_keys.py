from django.core.management.base import CommandError
from django.db import transaction

from connectors.audit.commands import AuditedCommand
from connectors.crypto import SecretUnavailable, is_encrypted_with_newest_key, reencrypt_with_newest_key
from connectors.models import Connector


class Command(AuditedCommand):
    help = (
        "Re-encrypt every stored connector API key with the newest key of CONNECTORS_ENCRYPTION_KEYS. "
        "Idempotent: keys already under the newest key are left alone."
    )

    def handle(self, *args, **options):
        rotated = current = 0
        with transaction.atomic():
            for connector in Connector.objects.select_for_update().exclude(encrypted_api_key=""):
                if is_encrypted_with_newest_key(connector.encrypted_api_key):
                    current += 1
                    continue
                try:
                    connector.encrypted_api_key = reencrypt_with_newest_key(connector.encrypted_api_key)
                except SecretUnavailable as exc:
                    raise CommandError(f"connector {connector.pk} ({connector.name}): {exc}; nothing was changed") from None
                connector.save(update_fields=["encrypted_api_key"])
                rotated += 1
        self.stdout.write(f"Re-encrypted {rotated} key(s); {current} already used the newest key.")
