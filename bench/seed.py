"""Create what a benchmark needs in the (already migrated) bench database; prints it as JSON.

A user in the "Connector users" role (for HTTP Basic, hashed with the production hasher), an API key of that user,
and one OpenAI connector per upstream scenario. Run by bench/harness.py with the app's environment:
``python -m bench.seed <upstream base URL> <scenario> ...``.
"""

import json
import os
import sys


def main(base_url: str, scenarios: list[str]) -> dict:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "connectors_admin.settings")
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    from connectors.accounts.api_keys import create_api_key
    from connectors.models import Connector, Provider

    user = get_user_model().objects.create_user("bench", "bench@example.com", "bench-password-9f8e7d")
    user.groups.add(Group.objects.get(name="Connector users"))
    _record, api_key = create_api_key(user, "bench")
    connectors = {}
    for scenario in scenarios:
        connector = Connector(
            id=f"bench-{scenario}",
            name=f"Bench {scenario}",
            provider=Provider.OPENAI,
            api_url=f"{base_url}/{scenario}/v1/chat/completions",
            default_model="gpt-4o",
        )
        connector.api_key = "sk-bench-upstream-key"
        connector.full_clean(exclude=["created_by"])
        connector.save()
        connectors[scenario] = connector.pk
        if os.environ.get("BENCH_GOVERNED"):
            _govern(connector.pk)
    return {"username": "bench", "password": "bench-password-9f8e7d", "api_key": api_key, "connectors": connectors}


def _govern(connector_id: str) -> None:
    """A budget and a rate limit on the connector, active (every execution is checked and counted against them)
    but so large that no call of a benchmark is refused: what they add to an execution is what is measured."""
    from decimal import Decimal

    from usage.governance.models import Budget, Period, RateLimit, Scope, Unit

    Budget.objects.create(name="Bench budget", scope=Scope.CONNECTOR, connector_id=connector_id, period=Period.MONTH,
                          unit=Unit.COST, amount=Decimal(10**9))
    RateLimit.objects.create(scope=Scope.CONNECTOR, connector_id=connector_id, requests_per_minute=10**9,
                             tokens_per_minute=2 * 10**9)


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2:])))
