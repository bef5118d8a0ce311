from django.apps import AppConfig


class GovernanceConfig(AppConfig):
    """Spend governance: prices (cost of every execution), budgets, rate limits and alerts."""

    name = "usage.governance"
    label = "governance"
    verbose_name = "Governance"

    def ready(self) -> None:
        from connectors.access.roles import register_roles
        from usage.governance.enforcement import admission
        from usage.governance.permissions import ROLES
        from usage.governance.pricing import prices as pricing

        register_roles(self, ROLES)
        pricing.connect_signals()
        admission.connect_signals()
