"""The governance pages' forms: budgets, rate limits, prices, per-connector pricing, alert channels, error-rate rules.

Each refuses bad input with a message that says what to type instead. Budgets and rate limits of a user or an API
key are for superusers only (usage/governance/permissions.py): the form offers those scopes to superusers alone and
refuses them from anyone else, whatever was posted.
"""

from __future__ import annotations

from decimal import Decimal

from django import forms
from django.contrib.auth import get_user_model
from django.utils import timezone

from connectors.access.policy import manages_people
from connectors.crypto import SecretUnavailable
from connectors.lookup import all_connectors
from connectors.models import ApiKey
from usage import space_scope
from usage.formatting import currency
from usage.governance.models import (
    DEFAULT_COMPLETION_ALLOWANCE,
    AlertChannel,
    Budget,
    ChannelKind,
    ConnectorPricing,
    ErrorRateRule,
    Price,
    RateLimit,
    Scope,
    Unit,
)
from usage.governance.pricing.prices import current_table
from usage.ranges import known_time_zones

SUPERUSER_SCOPES = (Scope.USER, Scope.API_KEY)
SUPERUSERS_ONLY = "Only superusers may set budgets and rate limits for a user or an API key."


def connector_choices(current: str = "") -> list[tuple[str, str]]:
    """Every connector by name (two of one name told apart by the start of their ids); a rule's connector that was
    deleted since stays choosable under its id."""
    connectors = all_connectors()
    names = [c.name for c in connectors]
    choices = [(c.pk, c.name if names.count(c.name) == 1 else f"{c.name} ({c.pk[:8]}…)") for c in connectors]
    if current and current not in {pk for pk, _ in choices}:
        choices.append((current, f"{current} (deleted connector)"))
    return choices


def _refuse_negative(form: forms.Form, names: tuple[str, ...], what: str) -> None:
    for name in names:
        value = form.cleaned_data.get(name)
        if value is not None and value < 0:
            form.add_error(name, f"{what} cannot be negative.")


class ScopedRuleForm(forms.ModelForm):
    """Scope and subject of a budget or rate limit. ``user`` is the person submitting the form."""

    connector_id = forms.ChoiceField(label="Connector", required=False)

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.editor = user
        self.fields["connector_id"].choices = [("", "—")] + connector_choices(self.instance.connector_id)
        self.fields["connector_id"].help_text = "Scope connector: every execution of this connector."
        if "user" in self.fields:
            self.fields["user"].queryset = get_user_model().objects.order_by("username")
            # A key acts only in its own space, and a rule counts only its space's calls (README "Spaces"): a rule
            # on another space's key would count nothing.
            self.fields["api_key"].queryset = (ApiKey.objects.filter(space_id=space_scope.space_id())
                                               .select_related("user").order_by("user__username", "name"))
            self.fields["api_key"].label_from_instance = lambda key: f"{key} of {key.user.get_username()}"
            self.fields["api_key"].label = "API key"
        if not manages_people(user):
            # Shown only the connector scope; a user or API-key scope posted all the same is refused by clean_scope
            # with a message saying why (the field still accepts every scope, so the refusal is not "invalid choice").
            self.fields["scope"].widget.choices = [(Scope.CONNECTOR, Scope.CONNECTOR.label)]
            for name in ("user", "api_key"):
                self.fields.pop(name, None)

    def clean_scope(self):
        scope = self.cleaned_data["scope"]
        if scope in SUPERUSER_SCOPES and not manages_people(self.editor):
            raise forms.ValidationError(SUPERUSERS_ONLY)
        return scope

    def clean(self):
        cleaned = super().clean()
        scope = cleaned.get("scope")
        # Only the field of the chosen scope is kept, so a value left in another field is not an error.
        for scope_value, name in ((Scope.CONNECTOR, "connector_id"), (Scope.USER, "user"), (Scope.API_KEY, "api_key")):
            if scope != scope_value and name in cleaned:
                cleaned[name] = "" if name == "connector_id" else None
                setattr(self.instance, name, cleaned[name])
        if scope == Scope.CONNECTOR and not cleaned.get("connector_id"):
            self.add_error("connector_id", "Choose the connector this rule counts.")
        return cleaned


class HardLimitField(forms.ChoiceField):
    """What reaching the amount does, chosen each time a budget is created: no default hides it. "on" (the value of
    the checkbox this field replaced) still means refuse, for scripts written against the old form."""

    REFUSE, ALERT = "refuse", "alert"
    LEGACY = {"on": REFUSE, "true": REFUSE, "True": REFUSE, "false": ALERT, "False": ALERT}

    def __init__(self, **kwargs):
        super().__init__(choices=[
            (self.REFUSE, "Refuse calls: once the amount is used, every call this budget counts is refused "
                          "(the OpenAI-compatible endpoint answers 429, _execute an error naming the budget) until the period ends."),
            (self.ALERT, "Only alert: calls go on past the amount; an alert goes out at the soft threshold and "
                         "when the amount is reached."),
        ], widget=forms.RadioSelect, label="When the amount is used up", **kwargs)

    def to_python(self, value):
        value = super().to_python(value)
        return self.LEGACY.get(value, value)

    def clean(self, value):
        return super().clean(value) == self.REFUSE


class BudgetForm(ScopedRuleForm):
    hard_limit = HardLimitField()
    time_zone = forms.CharField(
        initial="UTC", help_text="Where the period's days begin and end: an IANA name such as Europe/Paris or UTC.",
        widget=forms.TextInput(attrs={"list": "time-zones", "autocomplete": "off", "spellcheck": "false"}),
    )

    class Meta:
        model = Budget
        fields = ["name", "scope", "connector_id", "user", "api_key", "period", "time_zone", "unit", "amount",
                  "soft_threshold_percent", "hard_limit", "completion_allowance", "enabled"]
        labels = {"amount": f"Amount (tokens, or {currency()} for a cost budget)",
                  "soft_threshold_percent": "Soft threshold (%)",
                  "completion_allowance": "Completion allowance (tokens)"}

    price_warning = ""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Left empty (or not posted, as by a script written before the field existed): the default.
        self.fields["completion_allowance"].required = False
        if self.instance.pk:
            self.initial["hard_limit"] = HardLimitField.REFUSE if self.instance.hard_limit else HardLimitField.ALERT

    def clean_completion_allowance(self):
        allowance = self.cleaned_data["completion_allowance"]
        return DEFAULT_COMPLETION_ALLOWANCE if allowance is None else allowance

    def clean_time_zone(self):
        name = self.cleaned_data["time_zone"].strip()
        if name not in known_time_zones():
            raise forms.ValidationError(f"Unknown time zone {name[:64]!r}: use an IANA name such as Europe/Paris or UTC.")
        return name

    def clean_amount(self):
        amount = self.cleaned_data["amount"]
        if amount is not None and amount <= 0:
            raise forms.ValidationError("The amount must be more than zero.")
        return amount

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("unit") == Unit.TOKENS and cleaned.get("amount") is not None:
            if cleaned["amount"] != cleaned["amount"].to_integral_value():
                self.add_error("amount", "A token budget is a whole number of tokens.")
        if cleaned.get("unit") == Unit.COST and not self.errors:
            self.price_warning = _missing_price_warning(cleaned.get("scope"), cleaned.get("connector_id"))
        return cleaned


def _missing_price_warning(scope: str, connector_id: str) -> str:
    """A cost budget without any price that applies to it is allowed (prices may come later), but said."""
    table = current_table()
    today = timezone.now().date()
    if scope == Scope.CONNECTOR:
        connector = next((c for c in all_connectors() if c.pk == connector_id), None)
        model = (connector.effective_default_model if connector else "") or ""
        if model and table.price_for(connector_id, (model,), today) is None:
            return (f"No price applies to {model!r}, this connector's default model: its executions add nothing to "
                    f"this cost budget until a price is added on the Prices page.")
        return ""
    if not Price.objects.exists():
        return "The price table is empty: executions add nothing to a cost budget until prices are added."
    return ""


class RateLimitForm(ScopedRuleForm):
    class Meta:
        model = RateLimit
        fields = ["scope", "connector_id", "user", "api_key", "requests_per_minute", "tokens_per_minute", "enabled"]
        help_texts = {"requests_per_minute": "Empty: no limit on requests.",
                      "tokens_per_minute": "Empty: no limit on tokens."}

    def clean(self):
        cleaned = super().clean()
        _refuse_negative(self, ("requests_per_minute", "tokens_per_minute"), "A limit")
        for name in ("requests_per_minute", "tokens_per_minute"):
            if cleaned.get(name) == 0:
                self.add_error(name, "A limit of zero would refuse everything: disable the rule instead.")
        return cleaned


PRICE_FIELDS = ("input_per_million", "cached_input_per_million", "output_per_million", "reasoning_per_million")


class PriceForm(forms.ModelForm):
    connector_id = forms.ChoiceField(
        label="Connector", required=False,
        help_text="Empty: a list price for every connector. A connector: its negotiated price (no discount applies).",
    )

    class Meta:
        model = Price
        fields = ["model_pattern", "valid_from", "input_per_million", "cached_input_per_million",
                  "output_per_million", "reasoning_per_million", "currency", "connector_id", "source"]
        widgets = {"valid_from": forms.DateInput(attrs={"type": "date"}),
                   "model_pattern": forms.TextInput(attrs={"spellcheck": "false"})}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["connector_id"].choices = [("", "— list price —")] + connector_choices(self.instance.connector_id)
        self.fields["currency"].initial = currency()

    def clean_model_pattern(self):
        pattern = self.cleaned_data["model_pattern"].strip()
        if not pattern:
            raise forms.ValidationError("Give a model name or a pattern such as gpt-4o-*.")
        return pattern

    def clean(self):
        cleaned = super().clean()
        _refuse_negative(self, PRICE_FIELDS, "A price")
        return cleaned


class DeploymentMapField(forms.CharField):
    """Azure's deployment -> model map typed one per line as ``deployment: model``."""

    widget = forms.Textarea(attrs={"rows": 4, "placeholder": "chat-prod: gpt-4o\nchat-mini: gpt-4o-mini",
                                   "spellcheck": "false"})

    def prepare_value(self, value):
        if isinstance(value, dict):
            return "\n".join(f"{deployment}: {model}" for deployment, model in value.items())
        return value

    def to_python(self, value) -> dict[str, str]:
        mapping: dict[str, str] = {}
        for number, line in enumerate((super().to_python(value) or "").splitlines(), start=1):
            if not line.strip():
                continue
            deployment, sep, model = line.partition(":")
            if not sep or not deployment.strip() or not model.strip():
                raise forms.ValidationError(f"Line {number}: write each entry as 'deployment: model'.")
            mapping[deployment.strip()] = model.strip()
        return mapping


class ConnectorPricingForm(forms.ModelForm):
    deployment_models = DeploymentMapField(
        label="Azure deployments", required=False,
        help_text="Which model each deployment runs, one 'deployment: model' per line. A deployment name is not a "
        "model name: without an entry, the model the provider reports is priced.",
    )

    class Meta:
        model = ConnectorPricing
        fields = ["discount_percent", "deployment_models"]
        labels = {"discount_percent": "Discount on list prices (%)"}

    def clean_discount_percent(self):
        discount = self.cleaned_data["discount_percent"]
        if discount is not None and not Decimal(0) <= discount <= Decimal(100):
            raise forms.ValidationError("A discount is between 0 and 100 %.")
        return discount


class TargetInput(forms.TextInput):
    """The target's input: email addresses are shown as they are, a URL never (a webhook URL is a secret), neither
    the stored one on the edit page nor one just typed on a form sent back with an error."""

    def format_value(self, value):
        return None if value and "://" in str(value) else super().format_value(value)


class AlertChannelForm(forms.ModelForm):
    target = forms.CharField(label="Target", max_length=2048, required=False, strip=True,
                             widget=TargetInput(attrs={"spellcheck": "false", "autocomplete": "off"}))
    secret = forms.CharField(
        label="Signing secret", required=False, strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
    )
    field_order = ["name", "kind", "target", "enabled", "secret"]

    class Meta:
        model = AlertChannel
        fields = ["name", "kind", "enabled"]

    TARGET_HELP = ("Email: addresses separated by commas. Webhook: the https:// or http:// URL, at a public address "
                   "unless the allowedHosts networking setting lists its host; stored encrypted, and shown afterwards "
                   "as its scheme and host only.")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["target"].help_text = self.TARGET_HELP
        if self.instance.target_encrypted and self.instance.kind == ChannelKind.WEBHOOK:
            self.fields["target"].help_text = (f"Now {self.instance.target_shown}. Leave blank to keep it; the URL is "
                                               "never shown again. " + self.TARGET_HELP)
        elif self.instance.target_encrypted:
            try:
                self.initial.setdefault("target", self.instance.target)  # email addresses, shown as they are
            except SecretUnavailable:
                pass  # left empty: blank keeps what is stored
        if self.instance.secret_encrypted:
            self.fields["secret"].help_text = "Webhooks: a secret is stored. Leave blank to keep it; never shown again."
        else:
            self.fields["secret"].help_text = ("Webhooks: signs each body with HMAC-SHA256 (README, \"Alerts\"). Stored "
                                               "encrypted, never shown again. Empty: sent unsigned.")

    def clean(self):
        cleaned = super().clean()
        target, kind = cleaned.get("target"), cleaned.get("kind")
        if target:
            self.instance.target = target
        elif self.instance.target_encrypted and kind and kind != self.instance.kind:
            # The kept target was the other kind's: checked as this kind, its error would quote it.
            self.add_error("target", "The kind changed: give the new target.")
        secret = cleaned.get("secret")
        if secret and kind == ChannelKind.EMAIL:
            self.add_error("secret", "Email channels are not signed: leave the secret empty.")
        elif secret:
            self.instance.set_secret(secret)
        return cleaned


class ErrorRateRuleForm(forms.ModelForm):
    connector_id = forms.ChoiceField(label="Connector")

    class Meta:
        model = ErrorRateRule
        fields = ["connector_id", "threshold_percent", "window_minutes", "min_requests", "enabled"]
        labels = {"threshold_percent": "Threshold (% of executions failed)", "window_minutes": "Window (minutes)"}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["connector_id"].choices = connector_choices(self.instance.connector_id)
