from django.apps import AppConfig


class GovernanceConfig(AppConfig):
    """Spend governance: prices (cost of every execution), budgets, rate limits and alerts."""

    name = "usage.governance"
    label = "governance"
    verbose_name = "Governance"

    def ready(self) -> None:
        from usage.governance import admission, pricing

        pricing.connect_signals()
        admission.connect_signals()
