"""Nothing of space B can be seen, run, changed, exported or counted by principals holding roles in space A only.

Every URL pattern of the project is enumerated from Django's resolver (so a new URL is covered without editing this
test; /metrics aside, which is the operator's, unauthenticated by design) and requested with its parameters filled
with space B's objects: without a prefix, under /s/team-a/ and under /s/team-b/; with GET and POST (and PUT and
DELETE on the API); by a user holding every role in A, a member of a group holding every role in A, that user's API
key of space A, and HTTP Basic credentials. No answer may carry anything that names or counts B's objects, no call
may reach B's upstream, and B's rows must be unchanged afterwards. The number of checks is printed and asserted.
"""

from __future__ import annotations

import json
import re

import pytest
from django.conf import settings
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone

from connectors.accounts.api_keys import create_api_key
from connectors.audit.models import AuditRecord
from connectors.models import ApiKey, Connector
from connectors.spaces.current import current_space_id
from connectors.spaces.models import Space, SpaceRoleGrant
from tests.conftest import basic_auth, make_user
from tests.helpers.events import record
from usage.governance.models import AlertChannel, Budget, ErrorRateRule, Price, RateLimit
from usage.models import ExecutionEvent

EXCLUDED = {"metrics"}  # /metrics is the operator's (README "Prometheus metrics"), aside by the terms
B_MARKERS = ("Bravo-Secret-Connector", "Bravo Space Marker", "bravo-budget-marker", "bravo-limit-marker",
             "bravo-channel-marker", "bravo-user-marker", "bravo-model-marker", "987654", "987,654",
             "sk-bravo-secret-key")
PARAMETER = re.compile(r"<(?:(?P<converter>[^>:]+):)?(?P<name>[^>]+)>")


def url_templates() -> list[tuple[str, str]]:
    """(route template, name) of every pattern of the project, nested includes resolved."""
    found: list[tuple[str, str]] = []

    def walk(patterns, prefix: str) -> None:
        for pattern in patterns:
            route = str(pattern.pattern)
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, prefix + route)
            elif isinstance(pattern, URLPattern):
                found.append((prefix + route, pattern.name or ""))

    walk(get_resolver().url_patterns, "")
    return found


def concrete_paths(template: str, values: dict[str, list[str]]) -> list[str]:
    """The template with each parameter filled with each of B's values for that name (regex routes, the admin's,
    are filled the same way after their anchors and groups are made plain)."""
    template = template.replace("^", "").replace("$", "").replace("\\Z", "")
    template = re.sub(r"\(\?P<(\w+)>[^)]*\)", r"<\1>", template)
    template = re.sub(r"\(\?:[^)]*\)\??", "", template)
    paths = [template]
    for match in PARAMETER.finditer(template):
        name = match.group("name")
        options = values.get(name, ["bravo"])
        paths = [path.replace(match.group(0), str(option), 1) for path in paths for option in options]
    return ["/" + path for path in paths]


@pytest.fixture
def spaces_world(db, fake_openai, django_user_model):
    team_a = Space.objects.create(id="team-a", name="Alpha")
    team_b = Space.objects.create(id="team-b", name="Bravo Space Marker")
    roles = list(Group.objects.filter(name__in=["Connector admins", "Connector users", "Usage viewers", "Auditors"]))
    a_admin = make_user(django_user_model, "alpha-admin")
    a_member = make_user(django_user_model, "alpha-member")
    team = Group.objects.create(name="team-a-people")
    a_member.groups.add(team)
    b_owner = make_user(django_user_model, "bravo-user-marker")
    for role in roles:
        SpaceRoleGrant.objects.create(space=team_a, role=role, user=a_admin)
        SpaceRoleGrant.objects.create(space=team_a, role=role, group=team)
        SpaceRoleGrant.objects.create(space=team_b, role=role, user=b_owner)
    token = current_space_id.set("team-b")  # B's objects are made in B, their audit records too
    try:
        b_connector = Connector(id="bravo-conn", name="Bravo-Secret-Connector", provider="Other",
                                api_url=fake_openai.url(), default_model="bravo-model-marker", space=team_b)
        b_connector.api_key = "sk-bravo-secret-key"
        b_connector.save()
        b_key, _ = create_api_key(b_owner, "bravo key", space_id="team-b")
        budget = Budget.objects.create(space=team_b, scope="space", name="bravo-budget-marker", amount=5,
                                       unit="tokens")
        limit = RateLimit.objects.create(space=team_b, scope="connector", connector_id=b_connector.pk,
                                         requests_per_minute=7)
        channel = AlertChannel.objects.create(space=team_b, name="bravo-channel-marker", kind="email",
                                              target="bravo@example.com")
        rule = ErrorRateRule.objects.create(space=team_b, connector_id=b_connector.pk, threshold_percent=50)
        price = Price.objects.create(model_pattern="bravo-model-marker", connector_id=b_connector.pk,
                                     valid_from=timezone.now().date(), input_per_million=1, output_per_million=2)
        event = record(timezone.now(), connector_id=b_connector.pk, connector_name="Bravo-Secret-Connector",
                       user=b_owner, user_name="bravo-user-marker", requested_model="bravo-model-marker",
                       prompt_tokens=987654, space_id="team-b")
    finally:
        current_space_id.reset(token)
    _key_record, a_key = create_api_key(a_admin, "alpha key", space_id="team-a")
    grant_b = SpaceRoleGrant.objects.get(space=team_b, role=roles[0], user=b_owner)
    values = {
        "connector_id": [b_connector.pk], "event_id": [event.pk], "key_id": [b_key.pk], "space_id": ["team-b"],
        "grant_id": [grant_b.pk], "object_id": [b_connector.pk], "app_label": ["connectors"],
        "pk": sorted({str(obj.pk) for obj in (budget, limit, channel, rule, price)}),
    }
    return {"a_admin": a_admin, "a_member": a_member, "a_key": a_key, "values": values,
            "b_connector": b_connector, "upstream": fake_openai}


def b_state() -> dict:
    """Everything of space B that a request could change."""
    return {
        "connectors": list(Connector.objects.filter(space_id="team-b").values()),
        "keys": list(ApiKey.objects.filter(space_id="team-b").values()),
        "budgets": list(Budget.objects.filter(space_id="team-b").values()),
        "limits": list(RateLimit.objects.filter(space_id="team-b").values()),
        "channels": list(AlertChannel.objects.filter(space_id="team-b").values()),
        "rules": list(ErrorRateRule.objects.filter(space_id="team-b").values()),
        "prices": list(Price.objects.filter(connector_id="bravo-conn").values()),
        "grants": list(SpaceRoleGrant.objects.filter(space_id="team-b").values()),
        "space": list(Space.objects.filter(pk="team-b").values()),
        "events": list(ExecutionEvent.objects.filter(connector_id="bravo-conn").values_list("pk", flat=True)),
        "audit": list(AuditRecord.objects.filter(space_id="team-b").values_list("object_type", "action", "actor")),
    }


def request_bodies(values: dict) -> dict:
    connector_id = values["connector_id"][0]
    run = {"params": {"subAction": "run", "subActionParams": {"body": json.dumps(
        {"messages": [{"role": "user", "content": "hi"}]})}}}
    return {
        "api_connector_execute": run,
        "api_connector": {"name": "taken over", "config": {"apiProvider": "OpenAI", "apiUrl": "https://x.example"}},
        "api_spaces_copy": {"objects": [{"type": "action", "id": connector_id}], "spaces": ["team-a"]},
        "api_spaces": {"id": "team-b", "name": "taken over"},
        "api_space": {"id": "team-b", "name": "taken over"},
        "openai_chat_completions": {"model": "gpt", "messages": [{"role": "user", "content": "hi"}]},
    }


FORM_DATA_KEYS = ("ids", "connector_id", "connector", "space", "scope", "api_key", "confirm")


def body_text(response) -> str:
    if getattr(response, "streaming", False):
        return b"".join(response.streaming_content).decode("utf-8", "replace")
    return response.content.decode("utf-8", "replace")


def test_principals_of_space_a_see_run_change_export_and_count_nothing_of_space_b(spaces_world):
    world = spaces_world
    values = world["values"]
    bodies = request_bodies(values)
    form = {name: values["connector_id"][0] for name in FORM_DATA_KEYS} | {"confirm": "1", "scope": "space"}
    before = b_state()
    templates = [(t, n) for t, n in url_templates() if n not in EXCLUDED]
    assert len(templates) > 60, "the resolver should list every page and API route"
    checks = 0
    leaks: list[str] = []
    principals = [
        ("session user", {"login": world["a_admin"]}),
        ("session group member", {"login": world["a_member"]}),
        ("API key", {"HTTP_AUTHORIZATION": f"ApiKey {world['a_key']}"}),
        ("Basic", {"HTTP_AUTHORIZATION": basic_auth(world["a_admin"])}),
    ]
    signed_in: dict[str, Client] = {}

    def client_for(principal: str, how: dict) -> Client:
        """A new client for a credential sent with each request; for a session, the principal's signed-in client,
        signed in again once a request (the logout form) has ended its session."""
        if "login" not in how:
            return Client()
        client = signed_in.get(principal)
        cookie = client.cookies.get(settings.SESSION_COOKIE_NAME) if client else None
        if cookie is None or not cookie.value:
            client = signed_in[principal] = Client()
            client.force_login(how["login"])
        return client

    for template, name in templates:
        api = template.startswith("api/") or template.startswith("internal/")
        methods = ("GET", "POST", "PUT", "DELETE") if api else ("GET", "POST")
        for path in concrete_paths(template, values):
            for prefix in ("", "/s/team-a", "/s/team-b"):
                for principal, how in principals:
                    headers = {key: value for key, value in how.items() if key != "login"}
                    if name.startswith("openai") and "HTTP_AUTHORIZATION" in headers:
                        headers["HTTP_AUTHORIZATION"] = headers["HTTP_AUTHORIZATION"].replace("ApiKey", "Bearer")
                    for method in methods:
                        client = client_for(principal, how)
                        if api:
                            response = client.generic(method, prefix + path, json.dumps(bodies.get(name, {})),
                                                      content_type="application/json", HTTP_KBN_XSRF="1", **headers)
                        elif method == "POST":
                            response = client.post(prefix + path, form, **headers)
                        else:
                            response = client.get(prefix + path, **headers)
                        checks += 1
                        text = body_text(response)
                        where = f"{principal} {method} {prefix + path} -> {response.status_code}"
                        if response.status_code >= 500:
                            leaks.append(f"{where}: server error")
                        for marker in B_MARKERS:
                            if marker in text:
                                leaks.append(f"{where}: shows {marker!r}")
    assert leaks == [], "\n".join(leaks[:40])
    assert world["upstream"].requests == [], "a request of space A ran space B's connector"
    assert b_state() == before, "a request of space A changed space B"
    print(f"\nspace isolation: {checks} checks over {len(templates)} URL patterns")
    assert checks > 2000
