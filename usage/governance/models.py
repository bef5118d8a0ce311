"""Prices of models, per connector overrides; later budgets, rate limits and alert channels."""

from decimal import Decimal

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

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
        from django.conf import settings

        if self.currency != settings.USAGE_CURRENCY:
            raise ValidationError(
                {"currency": f"Costs are summed in one currency, {settings.USAGE_CURRENCY} (USAGE_CURRENCY)."}
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
