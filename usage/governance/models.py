"""Prices of models, per connector overrides; later budgets, rate limits and alert channels."""

from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from connectors.lookup import connector_name
from usage.formatting import NANOS_PER_UNIT, currency

PRICE_FIELD = {"max_digits": 14, "decimal_places": 6, "validators": [MinValueValidator(Decimal(0))]}


class Price(models.Model):
    """The price of one model (or a pattern of model names) from a date on, per million tokens.

    Prices are versioned: a new price for the same model is a new row with a later ``valid_from``, so an event keeps
    the price of its day. A row with a ``connector_id`` is a negotiated price of that connector only.
    """

    model_pattern = models.CharField(
        max_length=255,
        help_text="A model name, or a pattern with * (gpt-4o-* matches gpt-4o-2024-08-06). The most specific match "
        "wins: an exact name, then the longest pattern.",
    )
    valid_from = models.DateField(help_text="The price holds from this day (UTC) until the next version.")
    input_per_million = models.DecimalField("input, per 1M tokens", **PRICE_FIELD)
    cached_input_per_million = models.DecimalField(
        "cached input, per 1M tokens", null=True, blank=True, help_text="Empty: cached tokens cost the input price.",
        **PRICE_FIELD,
    )
    output_per_million = models.DecimalField("output, per 1M tokens", **PRICE_FIELD)
    reasoning_per_million = models.DecimalField(
        "reasoning, per 1M tokens", null=True, blank=True,
        help_text="Empty: reasoning tokens are output tokens and cost the output price.", **PRICE_FIELD,
    )
    currency = models.CharField(max_length=3, default="USD")
    connector_id = models.CharField(
        max_length=64, blank=True, default="",
        help_text="Empty: a list price for every connector. Set: a negotiated price of this connector only.",
    )
    source = models.CharField(max_length=500, blank=True, help_text="Where and when this price was read.")

    class Meta:
        ordering = ["model_pattern", "-valid_from"]
        constraints = [
            models.UniqueConstraint(fields=["model_pattern", "connector_id", "valid_from"], name="price_version"),
        ]

    def __str__(self) -> str:
        scope = f" for connector {self.connector_id}" if self.connector_id else ""
        return f"{self.model_pattern}{scope} from {self.valid_from}"

    def clean(self) -> None:
        if self.currency != currency():
            raise ValidationError(
                {"currency": f"Costs are summed in one currency, {currency()} (USAGE_CURRENCY)."}
            )


class ConnectorPricing(models.Model):
    """How one connector's executions are priced: a discount on list prices, and for Azure the deployment map."""

    connector_id = models.CharField(max_length=64, primary_key=True)
    discount_percent = models.DecimalField(
        max_digits=5, decimal_places=2, default=Decimal(0),
        validators=[MinValueValidator(Decimal(0)), MaxValueValidator(Decimal(100))],
        help_text="Taken off list prices (not off this connector's negotiated prices).",
    )
    deployment_models = models.JSONField(
        default=dict, blank=True,
        help_text='Azure: which model each deployment runs, e.g. {"chat-prod": "gpt-4o"}. A deployment name is not '
        "a model name; without an entry the model the provider reports is priced.",
    )

    class Meta:
        verbose_name_plural = "connector pricing"

    def __str__(self) -> str:
        return f"pricing of {self.connector_id}"

    def clean(self) -> None:
        mapping = self.deployment_models
        if not isinstance(mapping, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and k and v for k, v in mapping.items()
        ):
            raise ValidationError({"deployment_models": "Expected an object of deployment name to model name."})


class Scope(models.TextChoices):
    SPACE = "space", "Space (every execution in it: the team's budget)"
    CONNECTOR = "connector", "Connector"
    USER = "user", "User"
    API_KEY = "api_key", "API key"


class Period(models.TextChoices):
    DAY = "day", "Calendar day"
    WEEK = "week", "Calendar week (Monday to Sunday)"
    MONTH = "month", "Calendar month"


class Unit(models.TextChoices):
    TOKENS = "tokens", "Tokens"
    COST = "cost", "Cost"


# The subject of a space-scope rule (the team budget): every execution of the rule's space.
WHOLE_SPACE = ("space", None)


class ScopedRule(models.Model):
    """Whose executions a budget or a rate limit counts: one space's, one connector's, one user's, or one API key's.

    Every rule belongs to a space (its pages show it there, README "Spaces") and counts the executions made in that
    space only: scope space every one of them, scope connector those of the connector (a preconfigured connector is
    in every space; its calls in another space are that space's), scope user those of the user."""

    space = models.ForeignKey("spaces.Space", on_delete=models.CASCADE, default="default", related_name="+")
    scope = models.CharField(max_length=16, choices=Scope.choices)
    connector_id = models.CharField(max_length=64, blank=True, help_text="Scope connector: the connector's id.")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="+",
        help_text="Scope user: every execution by this user in this space, with any API key and on any connector.",
    )
    api_key = models.ForeignKey(
        "connectors.ApiKey", null=True, blank=True, on_delete=models.CASCADE, related_name="+",
        help_text="Scope API key: every execution made with this key.",
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True

    @property
    def subject(self) -> str:
        """Whose executions, in words: ``connector 3f2…``, ``user alice``, ``API key ci (cak_ab12…)``."""
        if self.scope == Scope.USER:
            return f"user {self.user.get_username() if self.user else '?'}"
        if self.scope == Scope.API_KEY:
            return f"API key {self.api_key if self.api_key else '?'}"
        if self.scope == Scope.SPACE:
            return f"space {self.space_id}"
        return f"connector {self.connector_id}"

    @property
    def subject_text(self) -> str:
        """``subject`` for people: the connector by name (a database read, so never on the execution path)."""
        if self.scope == Scope.CONNECTOR:
            return f"connector {connector_name(self.connector_id) or f'{self.connector_id} (deleted)'}"
        return self.subject

    @property
    def subject_key(self) -> tuple[str, str | int | None]:
        """Whose executions the rule counts within its own space, as admission looks it up (``RuleSet`` in
        usage/governance/enforcement/admission.py): ``("connector", id)``, ``("user", id)``, ``("key", id)``, or
        ``WHOLE_SPACE``. A rule never counts another space's executions: a preconfigured connector is in every
        space, and so is a user with roles in several (README "Spaces")."""
        if self.scope == Scope.USER:
            return ("user", self.user_id)
        if self.scope == Scope.API_KEY:
            return ("key", self.api_key_id)
        if self.scope == Scope.SPACE:
            return WHOLE_SPACE
        return ("connector", self.connector_id)

    def clean(self) -> None:
        needed = {Scope.CONNECTOR: "connector_id", Scope.USER: "user", Scope.API_KEY: "api_key"}.get(self.scope)
        values = {"connector_id": self.connector_id, "user": self.user_id, "api_key": self.api_key_id}
        if self.scope == Scope.SPACE:
            extra = [name for name, value in values.items() if value]
            if extra:
                raise ValidationError({extra[0]: "Leave this empty for this scope."})
            return
        if needed is None:
            return
        if not values[needed]:
            raise ValidationError({needed: "Required for this scope."})
        extra = [name for name, value in values.items() if value and name != needed]
        if extra:
            raise ValidationError({extra[0]: "Leave this empty for this scope."})


# What a call that sets no completion cap is assumed to write (README, "Budgets and rate limits"): the output limit
# of many chat models (gpt-4-turbo, gpt-3.5-turbo, the first gpt-4o), so a usual answer fits in it, while a budget
# keeps room for many calls at once. A budget whose callers write longer answers without a cap should raise it.
DEFAULT_COMPLETION_ALLOWANCE = 4096
MAX_COMPLETION_ALLOWANCE = 10_000_000


class Budget(ScopedRule):
    """A spending limit over a calendar period: tokens or money, with a soft threshold that alerts and an optional
    hard limit that refuses executions until the period ends (README, "Budgets and rate limits")."""

    name = models.CharField(max_length=100, help_text="Shown in alerts and in the error a refused call gets.")
    period = models.CharField(max_length=8, choices=Period.choices, default=Period.MONTH)
    time_zone = models.CharField(max_length=64, default="UTC", help_text="Where the period's days begin and end.")
    unit = models.CharField(max_length=8, choices=Unit.choices, default=Unit.COST)
    amount = models.DecimalField(
        max_digits=20, decimal_places=4, validators=[MinValueValidator(Decimal(0))],
        help_text="Tokens, or money in USAGE_CURRENCY.",
    )
    soft_threshold_percent = models.PositiveSmallIntegerField(
        default=80, validators=[MinValueValidator(1), MaxValueValidator(100)],
        help_text="An alert goes out once per period when consumption reaches this share of the amount.",
    )
    hard_limit = models.BooleanField(
        default=True, help_text="Refuse further executions once the amount is reached, until the period ends.",
    )
    completion_allowance = models.PositiveIntegerField(
        default=DEFAULT_COMPLETION_ALLOWANCE, validators=[MaxValueValidator(MAX_COMPLETION_ALLOWANCE)],
        help_text="Completion tokens reserved for a call that sets no max_tokens or max_completion_tokens, on top of "
        "its prompt. A call that sets one reserves that instead.",
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def limit_units(self) -> int:
        """The amount in counter units: tokens, or nanos of USAGE_CURRENCY."""
        return int(self.amount) if self.unit == Unit.TOKENS else int(self.amount * NANOS_PER_UNIT)

    def clean(self) -> None:
        super().clean()
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(self.time_zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValidationError({"time_zone": "Not a time zone name (for example Europe/Paris or UTC)."}) from None


class RateLimit(ScopedRule):
    """Requests and tokens per calendar minute (README, "Budgets and rate limits")."""

    requests_per_minute = models.PositiveIntegerField(null=True, blank=True)
    tokens_per_minute = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["scope", "connector_id"]

    def __str__(self) -> str:
        parts = []
        if self.requests_per_minute is not None:
            parts.append(f"{self.requests_per_minute} requests/min")
        if self.tokens_per_minute is not None:
            parts.append(f"{self.tokens_per_minute} tokens/min")
        return f"{', '.join(parts) or 'no limit'} for {self.subject_text}"

    def clean(self) -> None:
        super().clean()
        if self.requests_per_minute is None and self.tokens_per_minute is None:
            raise ValidationError("Set requests per minute, tokens per minute, or both.")


class Counter(models.Model):
    """The database counter store (usage/governance/enforcement/counters.py) when no Redis is configured: one row per budget
    period or rate-limit minute, added to atomically by every process."""

    key = models.CharField(max_length=200, primary_key=True)
    value = models.BigIntegerField(default=0)
    expires_at = models.DateTimeField()

    class Meta:
        default_permissions = ()
        indexes = [
            # Dropping expired counters: WHERE expires_at < now.
            models.Index(fields=["expires_at"], name="counter_expiry"),
        ]


class ChannelKind(models.TextChoices):
    EMAIL = "email", "Email"
    WEBHOOK = "webhook", "Webhook (JSON, Slack-compatible, HMAC-signed)"


class AlertChannel(models.Model):
    """Where alerts go: email addresses, or a webhook URL that receives signed JSON. Belongs to a space.

    The target is stored encrypted, like connector API keys: a webhook URL is a secret (a Slack webhook's path is its
    token). It is read only to deliver; pages, forms, records and logs show ``target_shown``, which keeps a webhook's
    scheme and host only (README, "Alerts")."""

    space = models.ForeignKey("spaces.Space", on_delete=models.CASCADE, default="default", related_name="+")
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=8, choices=ChannelKind.choices)
    # Email: addresses separated by commas. Webhook: the https:// or http:// URL. Set and read through ``target``.
    target_encrypted = models.TextField(editable=False)
    secret_encrypted = models.TextField(blank=True, editable=False)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def target(self) -> str:
        """The addresses or the full webhook URL (decrypted; raises connectors.crypto.SecretUnavailable when the
        configured keys cannot read it). Only for delivering: show ``target_shown``."""
        from connectors.crypto import decrypt_secret

        return decrypt_secret(self.target_encrypted) if self.target_encrypted else ""

    @target.setter
    def target(self, value: str) -> None:
        from connectors.crypto import SecretUnavailable, encrypt_secret

        value = (value or "").strip()
        try:
            if self.target_encrypted and self.target == value:
                return  # the same target: the stored value (and so the audit trail) does not change
        except SecretUnavailable:
            pass
        self.target_encrypted = encrypt_secret(value) if value else ""

    @property
    def target_shown(self) -> str:
        """What may be shown of the target: email addresses as they are; of a webhook URL its scheme, host and port,
        the rest masked (``https://hooks.slack.com/…``)."""
        from connectors.crypto import SecretUnavailable
        from usage.governance.webhooks import shown_webhook_url

        try:
            target = self.target
        except SecretUnavailable:
            return "(cannot be decrypted with the configured CONNECTORS_ENCRYPTION_KEYS)"
        return shown_webhook_url(target) if self.kind == ChannelKind.WEBHOOK else target

    @property
    def secret(self) -> str:
        """The webhook's signing secret (stored encrypted like connector API keys)."""
        from connectors.crypto import decrypt_secret

        return decrypt_secret(self.secret_encrypted) if self.secret_encrypted else ""

    def set_secret(self, secret: str) -> None:
        from connectors.crypto import encrypt_secret

        self.secret_encrypted = encrypt_secret(secret) if secret else ""

    @property
    def recipients(self) -> list[str]:
        return [address.strip() for address in self.target.split(",") if address.strip()]

    def clean(self) -> None:
        from django.core.validators import validate_email

        from connectors.crypto import SecretUnavailable

        if not self.target_encrypted:
            raise ValidationError({"target": "Give the email addresses or the webhook URL."})
        try:
            target = self.target
        except SecretUnavailable:
            raise ValidationError({"target": "The stored target cannot be decrypted with the configured "
                                             "CONNECTORS_ENCRYPTION_KEYS: type it again."}) from None
        if self.kind == ChannelKind.EMAIL:
            if not self.recipients:
                raise ValidationError({"target": "Give at least one email address."})
            for address in self.recipients:
                if "://" in address:  # a webhook URL, never quoted back: it may hold a token
                    raise ValidationError({"target": "A URL is not an email address: a webhook is of the kind "
                                                     "Webhook."})
                try:
                    validate_email(address)
                except ValidationError:
                    raise ValidationError({"target": f"{address!r} is not an email address."}) from None
        elif self.kind == ChannelKind.WEBHOOK:
            from usage.governance.webhooks import webhook_url_error

            # The connectors' URL rules, allowedHosts, and public addresses only (README, "Guarantees").
            problem = webhook_url_error(target)
            if problem:
                raise ValidationError({"target": problem})


class AlertKind(models.TextChoices):
    BUDGET_THRESHOLD = "budget_threshold", "Budget threshold reached"
    BUDGET_REACHED = "budget_reached", "Budget used up"
    RATE_LIMITED = "rate_limited", "Rate limit reached"
    ERROR_RATE = "error_rate", "Error rate over threshold"


class Alert(models.Model):
    """One alert, raised once per threshold and period however many processes see it (``key`` is unique).

    It belongs to the space of the rule that raised it (README "Spaces"): it shows on that space's alerts page and
    goes to that space's channels only, also when its connector is a preconfigured one (in every space)."""

    key = models.CharField(max_length=200, unique=True)
    kind = models.CharField(max_length=20, choices=AlertKind.choices)
    space = models.ForeignKey("spaces.Space", on_delete=models.CASCADE, default="default", related_name="+",
                              db_index=False)  # alert_space_newest starts with it
    connector_id = models.CharField(max_length=64, blank=True)
    message = models.TextField()
    details = models.JSONField(default=dict)
    raised_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-raised_at"]
        default_permissions = ("view",)
        indexes = [
            # The alerts page: one space's alerts, newest first.
            models.Index(fields=["space", "-raised_at"], name="alert_space_newest"),
        ]

    def __str__(self) -> str:
        return self.message


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SENT = "sent", "Sent"
    FAILED = "failed", "Failed (gave up)"


class AlertDelivery(models.Model):
    """An alert sent to one channel, retried with backoff until it is sent or given up."""

    alert = models.ForeignKey(Alert, on_delete=models.CASCADE, related_name="deliveries")
    channel = models.ForeignKey(AlertChannel, on_delete=models.CASCADE, related_name="deliveries")
    status = models.CharField(max_length=8, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField()
    last_error = models.CharField(max_length=500, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        default_permissions = ()
        constraints = [models.UniqueConstraint(fields=["alert", "channel"], name="one_delivery_per_channel")]
        indexes = [
            # The sender's claim: pending deliveries that are due.
            models.Index(fields=["status", "next_attempt_at"], name="delivery_due"),
        ]


class ErrorRateRule(models.Model):
    """Alert when a connector's share of failed executions over a window reaches a threshold."""

    space = models.ForeignKey("spaces.Space", on_delete=models.CASCADE, default="default", related_name="+")
    connector_id = models.CharField(max_length=64)
    threshold_percent = models.PositiveSmallIntegerField(validators=[MinValueValidator(1), MaxValueValidator(100)])
    window_minutes = models.PositiveIntegerField(default=15, validators=[MinValueValidator(1), MaxValueValidator(1440)])
    min_requests = models.PositiveIntegerField(default=10, help_text="No alert on fewer executions in the window.")
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["connector_id"]

    def __str__(self) -> str:
        connector = connector_name(self.connector_id) or f"{self.connector_id} (deleted)"
        return f"{self.threshold_percent}% errors over {self.window_minutes} min on connector {connector}"
