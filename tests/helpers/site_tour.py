"""Every page of the product, for every role: the objects that fill the URLs' parameters, and the URLs.

``populate`` creates one of each object a page is about (a connector with events of several users, models and
outcomes, budgets and rate limits, a price, an alert channel, an error rule and a raised alert, an API key);
``page_urls`` walks every URL pattern (django.urls.get_resolver) and fills its parameters from them, so a new page
is visited by the tests (and by bench/screenshots) without being listed anywhere. A pattern whose parameters
cannot be filled fails loudly (``UnfilledPattern``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal

from django.contrib.auth.models import Group
from django.contrib.auth.tokens import default_token_generator
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode

ROLES = {
    "admin": None,  # a superuser
    "connector_admin": "Connector admins",
    "operator": "Connector users",
    "analyst": "Usage viewers",
    "auditor": "Auditors",
    "outsider": "",  # signed in, no role
}

# Not pages a person reads: programs' endpoints, downloads, and the admin (Django's own, checked separately).
NOT_PAGES = ("api/", "internal/", "scim/", "metrics", "healthz", "admin/")
DOWNLOADS = (".csv", ".json", ".ndjson")


class UnfilledPattern(Exception):
    pass


@dataclass
class Tour:
    connector: object
    users: dict
    objects: dict = field(default_factory=dict)


def make_role_users(user_model, password: str) -> dict:
    users = {}
    for role, group in ROLES.items():
        name = f"tour-{role}"
        if group is None:
            users[role] = user_model.objects.create_superuser(name, f"{name}@example.com", password)
            continue
        user = user_model.objects.create_user(name, f"{name}@example.com", password)
        if group:
            user.groups.add(Group.objects.get(name=group))
        users[role] = user
    return users


def populate(users: dict, *, hours: int = 30) -> Tour:
    """One of each object the pages show, with events over the last ``hours`` hours."""
    from connectors.accounts.api_keys import create_api_key
    from connectors.models import Connector, Provider
    from connectors.spaces.models import Space, SpaceRoleGrant
    from usage.governance.models import (
        Alert,
        AlertChannel,
        AlertDelivery,
        Budget,
        ErrorRateRule,
        Price,
        RateLimit,
    )
    from usage.models import ExecutionEvent

    admin = users["admin"]
    connector = Connector(name="Support assistant", provider=Provider.OPENAI,
                          api_url="https://api.openai.com/v1/chat/completions", default_model="gpt-4o",
                          created_by=admin)
    connector.api_key = "sk-tour-secret-key-0123456789"
    connector.full_clean()
    connector.save()
    spare = Connector(name="Batch summaries", provider=Provider.OPENAI,
                      api_url="https://api.openai.com/v1/chat/completions", created_by=admin)
    spare.api_key = "sk-tour-other-key-0123456789"
    spare.full_clean()
    spare.save()
    key, _ = create_api_key(users["operator"], "Laptop script")

    now = timezone.now()
    events = []
    models = ("gpt-4o", "gpt-4o-mini")
    for step in range(hours * 2):
        failed = step % 7 == 3
        user = (users["operator"], users["connector_admin"], users["analyst"])[step % 3]
        events.append(ExecutionEvent(
            timestamp=now - dt.timedelta(minutes=30 * step + 1), connector_id=connector.pk,
            connector_name=connector.name, user=user, user_name=user.username,
            source="openai_api" if step % 2 else "api", sub_action="invokeAI", outcome="failure" if failed else "success",
            duration_ms=420.0 + step, upstream_status=429 if failed else 200,
            requested_model=models[step % 2], response_model="" if failed else "gpt-4o-2024-08-06",
            prompt_tokens=0 if failed else 800 + step, completion_tokens=0 if failed else 120 + step,
            total_tokens=0 if failed else 920 + 2 * step, usage_source="none" if failed else "provider",
            error_message="Rate limit reached for gpt-4o in organization org-x on tokens per min" if failed else "",
            api_key=key if step % 3 == 0 else None, cost_nanos=None if failed else 3_000_000 + step,
        ))
    stored = ExecutionEvent.objects.insert_batch(events)

    budget = Budget.objects.create(scope="connector", connector_id=connector.pk, name="Support monthly",
                                   period="month", unit="cost", amount=Decimal("100"))
    user_budget = Budget.objects.create(scope="user", user=users["operator"], name="Olivia's tokens",
                                        period="day", unit="tokens", amount=Decimal("500000"), hard_limit=False)
    limit = RateLimit.objects.create(scope="connector", connector_id=connector.pk, requests_per_minute=60)
    price = Price.objects.create(model_pattern="house-model", valid_from=dt.date(2026, 1, 1),
                                 input_per_million=Decimal("1"), output_per_million=Decimal("2"))
    channel = AlertChannel.objects.create(name="Ops mail", kind="email", target="ops@example.com")
    rule = ErrorRateRule.objects.create(connector_id=connector.pk, threshold_percent=50)
    alert = Alert.objects.create(key=f"error-rate:{connector.pk}:tour", kind="error_rate", connector_id=connector.pk,
                                 message=f"{connector.name}: 14% of calls failed in the last 15 minutes",
                                 details={"threshold_percent": 10})
    AlertDelivery.objects.create(alert=alert, channel=channel, next_attempt_at=now)
    space = Space.objects.create(id="marketing", name="Marketing", description="The marketing team's connectors")
    grant = SpaceRoleGrant.objects.create(space=space, role=Group.objects.get(name="Usage viewers"),
                                          user=users["analyst"])
    # stored[10] is a failure made without an API key: the event detail with the most empty values.
    return Tour(connector=connector, users=users, objects={
        "spare": spare, "api_key": key, "event": stored[10], "budget": budget, "user_budget": user_budget,
        "limit": limit, "price": price, "channel": channel, "rule": rule, "alert": alert, "space": space,
        "grant": grant,
    })


def _patterns(patterns, prefix=""):
    for entry in patterns:
        if isinstance(entry, URLResolver):
            yield from _patterns(entry.url_patterns, prefix + str(entry.pattern))
        elif isinstance(entry, URLPattern):
            yield prefix + str(entry.pattern), entry.name or ""


# The object behind an integer ``pk`` parameter, by URL name.
_PK_OBJECTS = {"budget": "budget", "rate_limit": "limit", "price": "price", "channel": "channel",
               "error_rule": "rule"}


def _fill(route: str, name: str, tour: Tour) -> str:
    values = {
        "connector_id": tour.connector.pk,
        "event_id": tour.objects["event"].pk,
        "key_id": tour.objects["api_key"].pk,
        "space_id": tour.objects["space"].pk,
        "grant_id": tour.objects["grant"].pk,
        "uidb64": urlsafe_base64_encode(force_bytes(tour.users["outsider"].pk)),
        "token": default_token_generator.make_token(tour.users["outsider"]),
    }
    if "<int:pk>" in route:
        kind = name.rsplit("_", 1)[0]
        if kind not in _PK_OBJECTS:
            raise UnfilledPattern(f"{route} ({name}): which object fills <pk>? Add it to site_tour._PK_OBJECTS")
        values["pk"] = tour.objects[_PK_OBJECTS[kind]].pk
    path = route
    for parameter, value in values.items():
        for converter in ("", "str:", "int:"):
            path = path.replace(f"<{converter}{parameter}>", str(value))
    if "<" in path:
        raise UnfilledPattern(f"{route} ({name}): a parameter site_tour does not know how to fill")
    return "/" + path


def page_urls(tour: Tour) -> list[str]:
    """Every URL of a page people read, filled with ``tour``'s objects; the admin's index is added separately."""
    urls = []
    for route, name in _patterns(get_resolver().url_patterns):
        if route.startswith(NOT_PAGES) or route.endswith(DOWNLOADS) or name == "logout":
            continue
        if route.startswith("^") or "(?P" in route:
            raise UnfilledPattern(f"{route}: a regular-expression page; teach site_tour to fill it")
        url = _fill(route, name, tour)
        if url not in urls:
            urls.append(url)
    return urls
