import re
import uuid

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models, transaction

from connectors import validation
from connectors.crypto import decrypt_secret, encrypt_secret

CONNECTOR_TYPE_ID = ".gen-ai"
CONNECTOR_TYPE_NAME = "OpenAI"


def new_connector_id() -> str:
    return str(uuid.uuid4())


connector_id_validator = RegexValidator(
    re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"),
    "An id is 1 to 64 letters, digits, '-', '_' or '.', starting with a letter or digit.",
)


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
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    # Preconfigured connectors (ACTIONS_CONFIG) are unsaved instances with this set; see preconfigured.py, and
    # lookup.py for finding a connector of either kind by id.
    is_preconfigured = False

    class Meta:
        ordering = ["name"]
        permissions = [("execute_connector", "Can run and test connectors")]

    def __str__(self) -> str:
        return self.name

    @property
    def api_key(self) -> str:
        # Decrypted once per instance and encrypted value (Fernet costs ~5% of an execution's CPU otherwise).
        encrypted = self.encrypted_api_key
        if not encrypted:
            return ""
        memo = self.__dict__.get("_decrypted_api_key")
        if memo is None or memo[0] != encrypted:
            memo = self.__dict__["_decrypted_api_key"] = (encrypted, decrypt_secret(encrypted))
        return memo[1]

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_decrypted_api_key", None)  # a pickled or copied connector never carries the plaintext key
        return state

    @api_key.setter
    def api_key(self, plaintext: str) -> None:
        self.encrypted_api_key = encrypt_secret(plaintext) if plaintext else ""

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
        if not url_problem and self.provider == Provider.AZURE:
            url_problem = validation.azure_url_error(self.api_url)
        if not url_problem:
            url_problem = validation.host_not_allowed_error(self.api_url)
        if url_problem:
            errors["api_url"] = url_problem
        if self.provider == Provider.OTHER and not self.default_model:
            errors["default_model"] = "A default model is required for an OpenAI-compatible server."
        if (
            self.provider == Provider.AZURE
            and self.default_model
            and not url_problem
            and validation.is_azure_deployments_url(self.api_url)
        ):
            errors["default_model"] = (
                "An Azure deployments URL names the model (its deployment); leave the default model empty."
            )
        if self.provider != Provider.OPENAI and (self.organization_id or self.project_id):
            errors["organization_id"] = "Organization and project ids apply to OpenAI connectors only."
        headers_problem = validation.headers_error(self.headers if self.headers is not None else {})
        if headers_problem:
            errors["headers"] = headers_problem
        if self.provider in (Provider.OPENAI, Provider.AZURE) and not self.encrypted_api_key:
            errors["api_key"] = "An API key is required for this provider."
        if errors:
            raise ValidationError(errors)

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
        return config


class ApiKeyQuerySet(models.QuerySet):
    def active(self):
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

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None
