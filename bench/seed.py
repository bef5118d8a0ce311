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
    return {"username": "bench", "password": "bench-password-9f8e7d", "api_key": api_key, "connectors": connectors}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2:])))
