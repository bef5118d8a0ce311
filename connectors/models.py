"""The connector and the API key: what an admin registers (name, provider, URL, default model, Kibana's config
keys) with its secrets encrypted at rest (crypto.py), and the personal keys programs call the API with.

A connector's id is Kibana's (any string of the allowed characters; a UUID when none is given). Its secrets are
never rendered back: the pages, the API and the audit trail see only whether one is set.
"""

import re
import uuid

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models, transaction

from connectors import validation
from connectors.crypto import decrypt_secret, encrypt_secret
from connectors.spaces.current import DEFAULT_SPACE_ID

CONNECTOR_TYPE_ID = ".gen-ai"
CONNECTOR_TYPE_NAME = "OpenAI"
# The Kibana release whose connector API this app answers as (docs/KIBANA.md 0): named in the deprecation warning of
# the 8.x routes and as kibana.version in the event-log export.
KIBANA_VERSION = "9.1.0"


def new_connector_id() -> str:
    return str(uuid.uuid4())


connector_id_validator = RegexValidator(
    re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"),
    "An id is 1 to 64 letters, digits, '-', '_' or '.', starting with a letter or digit.",
)


KEY_REQUIRED_FOR_NEW_ORIGIN = (
    "The URL now reaches another server (its scheme, host or port changed): enter the API key again. A stored key "
    "is only sent to the server it was entered for."
)


class VerificationMode(models.TextChoices):
    """TLS verification towards an Other provider (Kibana's ``config.verificationMode``; docs/KIBANA.md 1.1)."""

    FULL = "full", "full (certificate and host name)"
    CERTIFICATE = "certificate", "certificate (not the host name)"
    NONE = "none", "none (no verification)"


class Provider(models.TextChoices):
    OPENAI = "OpenAI", "OpenAI"
    AZURE = "Azure OpenAI", "Azure OpenAI"
    OTHER = "Other", "Other (OpenAI-compatible)"


class AuditedSaveMixin:
    """Saves and deletes in a transaction, so that the audit record the post_save/post_delete receivers write
    (connectors/audit/receivers.py) commits with the change or not at all."""

    def save(self, *args, **kwargs):
        with transaction.atomic(using=kwargs.get("using")):
            super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        with transaction.atomic(using=kwargs.get("using")):
            return super().delete(*args, **kwargs)


class Connector(AuditedSaveMixin, models.Model):
    # Generated ids are UUIDs; the API also accepts a caller-chosen id, as Kibana does.
    id = models.CharField(
        primary_key=True, max_length=64, default=new_connector_id, validators=[connector_id_validator]
    )
    name = models.CharField(max_length=255)
    connector_type_id = models.CharField(max_length=32, default=CONNECTOR_TYPE_ID, editable=False)
    provider = models.CharField(max_length=32, choices=Provider.choices, default=Provider.OPENAI)
    api_url = models.CharField("API URL", max_length=2048)
    default_model = models.CharField(max_length=255, blank=True)
    headers = models.JSONField(default=dict, blank=True)
    organization_id = models.CharField("OpenAI organization id", max_length=255, blank=True)
    project_id = models.CharField("OpenAI project id", max_length=255, blank=True)
    encrypted_api_key = models.TextField(blank=True, editable=False)
    # Kibana's config keys that callers read (docs/KIBANA.md 1.1): stored and returned, never put into requests.
    context_window_length = models.PositiveIntegerField(null=True, blank=True)
    temperature = models.FloatField(null=True, blank=True)
    enable_native_function_calling = models.BooleanField(null=True, blank=True)
    # Other provider only: TLS verification of the provider's certificate, and the PKI secrets for mutual TLS
    # (base64 PEM as Kibana takes them), encrypted at rest like the API key and never shown again.
    verification_mode = models.CharField(max_length=16, choices=VerificationMode.choices, blank=True)
    encrypted_certificate_data = models.TextField(blank=True, editable=False)
    encrypted_private_key_data = models.TextField(blank=True, editable=False)
    encrypted_ca_data = models.TextField(blank=True, editable=False)
    # Beyond Kibana (its open request #166561): the connector's own call timeout, used when the call names none.
    timeout_ms = models.PositiveIntegerField("timeout (ms)", null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # The space the connector belongs to (README "Spaces"); PROTECT: a space holding connectors is not deleted.
    space = models.ForeignKey("spaces.Space", on_delete=models.PROTECT, default=DEFAULT_SPACE_ID,
                              related_name="connectors")

    # Preconfigured connectors (ACTIONS_CONFIG) are unsaved instances with this set; see preconfigured.py, and
    # lookup.py for finding a connector of either kind by id. They are in every space, as in Kibana.
    is_preconfigured = False
    # Kibana's exposeConfig of a preconfigured connector: its config is returned by the API.
    expose_config = False

    class Meta:
        ordering = ["name"]
        permissions = [("execute_connector", "Can run and test connectors")]

    def __str__(self) -> str:
        return self.name

    def _decrypted(self, field_name: str) -> str:
        # Decrypted once per instance and encrypted value (Fernet costs ~5% of an execution's CPU otherwise).
        encrypted = getattr(self, field_name)
        if not encrypted:
            return ""
        memo_key = f"_decrypted_{field_name}"
        memo = self.__dict__.get(memo_key)
        if memo is None or memo[0] != encrypted:
            memo = self.__dict__[memo_key] = (encrypted, decrypt_secret(encrypted))
        return memo[1]

    @property
    def api_key(self) -> str:
        return self._decrypted("encrypted_api_key")

    def __getstate__(self):
        state = super().__getstate__()
        # A pickled or copied connector never carries a plaintext secret.
        for name in [key for key in state if key.startswith("_decrypted_")]:
            state.pop(name)
        return state

    @api_key.setter
    def api_key(self, plaintext: str) -> None:
        self.encrypted_api_key = encrypt_secret(plaintext) if plaintext else ""

    @property
    def certificate_data(self) -> str:
        return self._decrypted("encrypted_certificate_data")

    @certificate_data.setter
    def certificate_data(self, plaintext: str) -> None:
        self.encrypted_certificate_data = encrypt_secret(plaintext) if plaintext else ""

    @property
    def private_key_data(self) -> str:
        return self._decrypted("encrypted_private_key_data")

    @private_key_data.setter
    def private_key_data(self, plaintext: str) -> None:
        self.encrypted_private_key_data = encrypt_secret(plaintext) if plaintext else ""

    @property
    def ca_data(self) -> str:
        return self._decrypted("encrypted_ca_data")

    @ca_data.setter
    def ca_data(self, plaintext: str) -> None:
        self.encrypted_ca_data = encrypt_secret(plaintext) if plaintext else ""

    @property
    def uses_pki(self) -> bool:
        """Mutual TLS to an Other provider with the stored client certificate (docs/KIBANA.md 1.2)."""
        return self.provider == Provider.OTHER and bool(self.encrypted_certificate_data)

    @property
    def has_api_key(self) -> bool:
        return bool(self.encrypted_api_key)

    @property
    def api_host(self) -> str:
        from urllib.parse import urlsplit

        return urlsplit(self.api_url).hostname or ""

    @property
    def effective_default_model(self) -> str:
        if self.default_model:
            return self.default_model
        return validation.OPENAI_DEFAULT_MODEL if self.provider == Provider.OPENAI else ""

    def clean(self) -> None:
        errors: dict[str, str] = {}
        self.name = (self.name or "").strip()
        self.api_url = (self.api_url or "").strip()
        self.default_model = (self.default_model or "").strip()
        if not self.name:
            errors["name"] = "Name is required."
        for field_name in ("name", "default_model", "organization_id", "project_id"):
            problem = validation.text_error(getattr(self, field_name) or "")
            if problem:
                errors[field_name] = problem
        url_problem = validation.url_error(self.api_url) if self.api_url else "URL is required."
        # Kibana checks only that the URL parses and its host is allowed: the Azure URL's shape is a hint the
        # connector form gives (connectors/pages/forms.py), not a rule, so a gateway's URL saves (docs/KIBANA.md 1.1).
        if not url_problem:
            url_problem = validation.host_not_allowed_error(self.api_url)
        if url_problem:
            errors["api_url"] = url_problem
        if self.provider == Provider.OTHER and not self.default_model:
            errors["default_model"] = "A default model is required for an OpenAI-compatible server."
        if self.provider != Provider.OPENAI and (self.organization_id or self.project_id):
            errors["organization_id"] = "Organization and project ids apply to OpenAI connectors only."
        if self.provider != Provider.OTHER:
            if self.verification_mode:
                errors["verification_mode"] = "The verification mode applies to Other connectors only."
            if self.enable_native_function_calling is not None:
                errors["enable_native_function_calling"] = "Native function calling applies to Other connectors only."
            if self.encrypted_certificate_data or self.encrypted_private_key_data or self.encrypted_ca_data:
                errors["certificate_data"] = "PKI certificates apply to Other connectors only."
        elif self.encrypted_certificate_data or self.encrypted_private_key_data or self.encrypted_ca_data:
            pki_problem = validation.pki_secrets_error(self.certificate_data, self.private_key_data, self.ca_data)
            if pki_problem:
                errors["certificate_data"] = pki_problem
        headers_problem = validation.headers_error(self.headers if self.headers is not None else {})
        if headers_problem:
            errors["headers"] = headers_problem
        if self.provider in (Provider.OPENAI, Provider.AZURE) and not self.encrypted_api_key:
            errors["api_key"] = "An API key is required for this provider."
        elif "api_url" not in errors and self.moves_stored_key_to_another_origin():
            errors["api_key"] = KEY_REQUIRED_FOR_NEW_ORIGIN
        if errors:
            raise ValidationError(errors)

    def moves_stored_key_to_another_origin(self) -> bool:
        """Whether this change keeps the stored API key while the URL now reaches another scheme, host or port.

        Whoever may edit a connector must not be able to send a key they never saw (another team's) to a server of
        their choosing: a key moves to a new origin only when it is typed again. Compared with the stored row, so
        that it holds however the instance was loaded; a key typed again is encrypted anew and so differs.
        """
        if self._state.adding or not self.encrypted_api_key:
            return False
        stored = (
            Connector.objects.using(self._state.db or "default")
            .filter(pk=self.pk).values_list("api_url", "encrypted_api_key").first()
        )
        if stored is None:
            return False
        stored_url, stored_key = stored
        return self.encrypted_api_key == stored_key and validation.url_origin(self.api_url) != validation.url_origin(
            stored_url
        )

    def kibana_config(self) -> dict:
        """The connector's configuration under Kibana's key names (never the secret)."""
        config = {"apiProvider": self.provider, "apiUrl": self.api_url}
        if self.default_model:
            config["defaultModel"] = self.default_model
        if self.headers:
            config["headers"] = dict(self.headers)
        if self.organization_id:
            config["organizationId"] = self.organization_id
        if self.project_id:
            config["projectId"] = self.project_id
        if self.context_window_length is not None:
            config["contextWindowLength"] = self.context_window_length
        if self.temperature is not None:
            config["temperature"] = self.temperature
        if self.enable_native_function_calling is not None:
            config["enableNativeFunctionCalling"] = self.enable_native_function_calling
        if self.verification_mode:
            config["verificationMode"] = self.verification_mode
        # ``timeout_ms`` (this app's own setting) is left out: Kibana's strict schema would refuse the key, and a
        # fetched connector must post back to Kibana unchanged (docs/KIBANA.md 1.1).
        return config


class ApiKeyQuerySet(models.QuerySet):
    def active(self):
        """Not revoked; an expired key is still listed (and shown as expired), and refused by authentication."""
        return self.filter(revoked_at__isnull=True)


class ApiKey(AuditedSaveMixin, models.Model):
    """A per-user key for the JSON API (``Authorization: ApiKey <key>`` or ``Bearer <key>``).

    Only a SHA-256 digest is stored: the key is 256 random bits, so a slow password hash would add cost and no
    safety. The plaintext is shown once, when the key is created.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, help_text="The first characters of the key, to recognise it.")
    # Authentication looks keys up by digest.
    digest = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    # A key acts in the space it was made in, only there (README "Spaces"); optionally only on some of the space's
    # connectors (ids, so that preconfigured ones can be named too), and until an optional expiry.
    space = models.ForeignKey("spaces.Space", on_delete=models.PROTECT, default=DEFAULT_SPACE_ID,
                              related_name="api_keys")
    connector_ids = models.JSONField(default=list, blank=True,
                                     help_text="The connectors the key may use; empty: every connector of its space.")
    expires_at = models.DateTimeField(null=True, blank=True)

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    @property
    def is_expired(self) -> bool:
        from django.utils import timezone

        return self.expires_at is not None and self.expires_at <= timezone.now()
