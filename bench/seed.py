"""Create what a benchmark needs in the (already migrated) bench database; prints it as JSON.

A user in the "Connector users" role (for HTTP Basic, hashed with the production hasher), an API key of that user,
and one OpenAI connector per upstream scenario. Run by bench/harness.py with the app's environment:
``python -m bench.seed [--space ID] <upstream base URL> <scenario> ...``.

With ``--space ID`` (spaces in use, bench/harness.py): a second space ``ID`` holds the connectors and the API key,
the user holds "Connector users" in that space only (a SpaceRoleGrant, not the role's group, which would hold it in
every space), and one more connector, ``bench-default``, is in the default space, for the space check to tell
apart.
"""

import argparse
import json
import os

DEFAULT_SPACE_CONNECTOR = "bench-default"


def main(base_url: str, scenarios: list[str], space_id: str | None = None) -> dict:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "connectors_admin.settings")
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    from connectors.accounts.api_keys import create_api_key
    from connectors.spaces.current import DEFAULT_SPACE_ID
    from connectors.spaces.models import Space, SpaceRoleGrant

    user = get_user_model().objects.create_user("bench", "bench@example.com", "bench-password-9f8e7d")
    role = Group.objects.get(name="Connector users")
    if space_id:
        space = Space(id=space_id, name=f"Bench {space_id}")
        space.full_clean()
        space.save()
        SpaceRoleGrant.objects.create(space=space, role=role, user=user)
    else:
        user.groups.add(role)
    space_id = space_id or DEFAULT_SPACE_ID
    _record, api_key = create_api_key(user, "bench", space_id=space_id)
    connectors = {}
    for scenario in scenarios:
        connectors[scenario] = _connector(f"bench-{scenario}", f"Bench {scenario}",
                                          f"{base_url}/{scenario}/v1/chat/completions", space_id)
        if os.environ.get("BENCH_GOVERNED"):
            _govern(connectors[scenario], space_id)
    seeded = {"username": "bench", "password": "bench-password-9f8e7d", "api_key": api_key, "connectors": connectors}
    if space_id != DEFAULT_SPACE_ID:
        seeded["space"] = space_id
        seeded["default_space_connector"] = _connector(
            DEFAULT_SPACE_CONNECTOR, "Bench default space", f"{base_url}/{scenarios[0]}/v1/chat/completions",
            DEFAULT_SPACE_ID)
    return seeded


def _connector(connector_id: str, name: str, api_url: str, space_id: str) -> str:
    from connectors.models import Connector, Provider

    connector = Connector(id=connector_id, name=name, provider=Provider.OPENAI,
                          api_url=api_url, default_model="gpt-4o", space_id=space_id)
    connector.api_key = "sk-bench-upstream-key"
    connector.full_clean(exclude=["created_by"])
    connector.save()
    return connector.pk


def _govern(connector_id: str, space_id: str) -> None:
    """A budget and a rate limit on the connector, active (every execution is checked and counted against them)
    but so large that no call of a benchmark is refused: what they add to an execution is what is measured."""
    from decimal import Decimal

    from usage.governance.models import Budget, Period, RateLimit, Scope, Unit

    Budget.objects.create(name="Bench budget", scope=Scope.CONNECTOR, connector_id=connector_id, period=Period.MONTH,
                          unit=Unit.COST, amount=Decimal(10**9), space_id=space_id)
    RateLimit.objects.create(scope=Scope.CONNECTOR, connector_id=connector_id, requests_per_minute=10**9,
                             tokens_per_minute=2 * 10**9, space_id=space_id)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", metavar="ID", help="put the connectors and the API key in a second space ID")
    parser.add_argument("base_url")
    parser.add_argument("scenarios", nargs="+")
    args = parser.parse_args()
    print(json.dumps(main(args.base_url, args.scenarios, args.space)))
