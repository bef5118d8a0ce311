from django.apps import AppConfig


class GovernanceConfig(AppConfig):
    """Spend governance: prices (cost of every execution), budgets, rate limits and alerts."""

    name = "usage.governance"
    label = "governance"
    verbose_name = "Governance"

    def ready(self) -> None:
        from connectors.roles import sync_roles_after_migrate
        from usage.governance.enforcement import admission
        from usage.governance.pricing import prices as pricing
        from usage.governance.roles import ROLES

        sync_roles_after_migrate(self, ROLES)
        pricing.connect_signals()
        admission.connect_signals()
