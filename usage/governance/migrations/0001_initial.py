from decimal import Decimal

import django.core.validators
from django.db import migrations, models


def _price_field(**extra):
    return models.DecimalField(
        max_digits=14, decimal_places=6, validators=[django.core.validators.MinValueValidator(Decimal("0"))], **extra
    )


class Migration(migrations.Migration):
    initial = True
    dependencies = []

    operations = [
        migrations.CreateModel(
            name="Price",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("model_pattern", models.CharField(max_length=255, help_text="A model name, or a pattern with * (gpt-4o-* matches gpt-4o-2024-08-06). The most specific match wins: an exact name, then the longest pattern.")),
                ("valid_from", models.DateField(help_text="The price holds from this day (UTC) until the next version.")),
                ("input_per_million", _price_field(verbose_name="input, per 1M tokens")),
                ("cached_input_per_million", _price_field(null=True, blank=True, verbose_name="cached input, per 1M tokens", help_text="Empty: cached tokens cost the input price.")),
                ("output_per_million", _price_field(verbose_name="output, per 1M tokens")),
                ("reasoning_per_million", _price_field(null=True, blank=True, verbose_name="reasoning, per 1M tokens", help_text="Empty: reasoning tokens are output tokens and cost the output price.")),
                ("currency", models.CharField(default="USD", max_length=3)),
                ("connector_id", models.CharField(blank=True, default="", max_length=64, help_text="Empty: a list price for every connector. Set: a negotiated price of this connector only.")),
                ("source", models.CharField(blank=True, max_length=500, help_text="Where and when this price was read.")),
            ],
            options={"ordering": ["model_pattern", "-valid_from"]},
        ),
        migrations.AddConstraint(
            model_name="price",
            constraint=models.UniqueConstraint(fields=("model_pattern", "connector_id", "valid_from"), name="price_version"),
        ),
        migrations.CreateModel(
            name="ConnectorPricing",
            fields=[
                ("connector_id", models.CharField(max_length=64, primary_key=True, serialize=False)),
                ("discount_percent", models.DecimalField(decimal_places=2, default=Decimal("0"), max_digits=5, validators=[django.core.validators.MinValueValidator(Decimal("0")), django.core.validators.MaxValueValidator(Decimal("100"))], help_text="Taken off list prices (not off this connector's negotiated prices).")),
                ("deployment_models", models.JSONField(blank=True, default=dict, help_text='Azure: which model each deployment runs, e.g. {"chat-prod": "gpt-4o"}. A deployment name is not a model name; without an entry the model the provider reports is priced.')),
            ],
            options={"verbose_name_plural": "connector pricing"},
        ),
    ]
