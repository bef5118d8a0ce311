"""Roles per space, API keys of a space, and what each page and API reads in a space (README "Spaces")."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.models import Group
from django.utils import timezone

from connectors.access.policy import may, may_everywhere
from connectors.accounts.api_keys import create_api_key
from connectors.api import auth
from connectors.audit.models import AuditRecord
from connectors.caller import current_key_scope
from connectors.lookup import afind
from connectors.permissions import EXECUTE_CONNECTOR, VIEW_CONNECTOR
from connectors.spaces import directory
from connectors.spaces.current import current_space_id
from connectors.spaces.models import Space, SpaceRoleGrant
from tests.conftest import basic_auth, make_user
from tests.helpers.events import record
from tests.helpers.execute import execute_with_client, run_body
from usage.governance import alerts
from usage.governance.enforcement.counters import reset_counter_store
from usage.governance.models import Budget
from usage.models import ExecutionEvent


@pytest.fixture
def marketing(db):
    return Space.objects.create(id="marketing", name="Marketing")


def grant(space, role: str, **principal) -> SpaceRoleGrant:
    return SpaceRoleGrant.objects.create(space=space, role=Group.objects.get(name=role), **principal)


def in_space(space_id: str):
    class Entered:
        def __enter__(self):
            self.token = current_space_id.set(space_id)

        def __exit__(self, *exc):
            current_space_id.reset(self.token)

    return Entered()


def test_a_grant_holds_in_its_space_only_and_group_membership_holds_everywhere(marketing, django_user_model, operator):
    mia = make_user(django_user_model, "mia")
    grant(marketing, "Connector users", user=mia)
    assert may(mia, EXECUTE_CONNECTOR, "marketing") and not may(mia, EXECUTE_CONNECTOR, "default")
    assert may(operator, EXECUTE_CONNECTOR, "marketing") and may(operator, EXECUTE_CONNECTOR, "default")
    team = Group.objects.create(name="growth")
    gus = make_user(django_user_model, "gus")
    gus.groups.add(team)
    grant(None, "Auditors", group=team)
    assert may(gus, "audit.view_auditrecord", "marketing") and may_everywhere(gus, "audit.view_auditrecord")
    assert not may(gus, VIEW_CONNECTOR, "marketing")


def test_a_connector_of_another_space_is_a_404_page_and_a_space_one_opens_under_its_prefix(
        client, marketing, make_connector, connector_admin):
    connector = make_connector(name="Campaign bot", space=marketing)
    client.force_login(connector_admin)
    assert client.get(f"/connectors/{connector.pk}/").status_code == 404
    page = client.get(f"/s/marketing/connectors/{connector.pk}/")
    assert page.status_code == 200 and "Campaign bot" in page.content.decode()
    # Links stay inside the space.
    assert f'href="/s/marketing/connectors/{connector.pk}/edit/"' in page.content.decode()
    assert "Campaign bot" not in client.get("/connectors/").content.decode()


def test_a_key_acts_only_in_its_space_on_its_connectors_until_it_expires(client, marketing, make_connector,
                                                                        django_user_model, fake_openai):
    owner = make_user(django_user_model, "kai")
    grant(marketing, "Connector users", user=owner)
    allowed = make_connector(name="allowed", space=marketing, provider="Other", api_url=fake_openai.url(),
                             default_model="m")
    other = make_connector(name="other", space=marketing, provider="Other", api_url=fake_openai.url(),
                           default_model="m")
    _record, key = create_api_key(owner, "ci", space_id="marketing", connector_ids=[allowed.pk])
    headers = {"HTTP_AUTHORIZATION": f"ApiKey {key}"}
    ok = client.post(f"/s/marketing/api/actions/connector/{allowed.pk}/_execute", run_body(),
                     content_type="application/json", **headers)
    assert ok.status_code == 200 and ok.json()["status"] == "ok"
    assert client.post(f"/s/marketing/api/actions/connector/{other.pk}/_execute", run_body(),
                       content_type="application/json", **headers).status_code == 404
    assert client.get("/api/actions/connectors", **headers).status_code == 403  # the default space: not the key's
    assert ExecutionEvent.objects.get().space_id == "marketing"

    _expired_record, expired = create_api_key(owner, "old", space_id="marketing",
                                              expires_at=timezone.now() - timedelta(minutes=1))
    refused = client.get("/s/marketing/api/actions/connectors", HTTP_AUTHORIZATION=f"ApiKey {expired}")
    assert refused.status_code == 401 and "expired" in refused.json()["message"]
    client.force_login(owner)
    assert "Expired" in client.get("/s/marketing/account/api-keys/").content.decode()


def test_the_space_check_of_a_cached_credential_and_connector_costs_no_query(marketing, make_connector,
                                                                            django_user_model,
                                                                            django_assert_num_queries):
    owner = make_user(django_user_model, "quinn")
    grant(marketing, "Connector users", user=owner)
    connector = make_connector(space=marketing)
    _record, key = create_api_key(owner, "ci", space_id="marketing")

    async def authenticate_and_find():
        user = await auth.authenticate_api_key(key)
        return may(user, EXECUTE_CONNECTOR), await afind(connector.pk)

    token = current_key_scope.set(None)
    try:
        with in_space("marketing"):
            async_to_sync(authenticate_and_find)()  # fills the credential and connector caches (and "last used")
            with django_assert_num_queries(0):
                allowed, found = async_to_sync(authenticate_and_find)()
            assert allowed and found.pk == connector.pk
    finally:
        current_key_scope.reset(token)


def test_the_space_dashboard_sums_the_space_connectors_only(client, marketing, make_connector, admin_user):
    ours = make_connector(name="Ours", space=marketing)
    theirs = make_connector(name="Theirs")
    record(timezone.now(), connector_id=ours.pk, connector_name="Ours", prompt_tokens=111, space_id="marketing")
    record(timezone.now(), connector_id=theirs.pk, connector_name="Theirs", prompt_tokens=222000)
    client.force_login(admin_user)
    page = client.get("/s/marketing/usage/").content.decode()
    assert "Ours" in page and "Theirs" not in page and "222,000" not in page
    assert "Theirs" in client.get("/usage/").content.decode()


def test_a_space_budget_counts_every_execution_of_the_space(settings, transactional_db, asgi_live_server,
                                                             make_connector, operator, fake_openai):
    settings.REDIS_URL = ""  # counters in the database, as tests/governance/test_enforcement.py
    reset_counter_store()
    marketing = Space.objects.create(id="marketing", name="Marketing")
    connector = make_connector(space=marketing, provider="Other", api_url=fake_openai.url(), default_model="m")
    Budget.objects.create(space=marketing, scope="space", name="team budget", unit="tokens", amount=1,
                          completion_allowance=1)
    response = httpx.post(f"{asgi_live_server.url}/s/marketing/api/actions/connector/{connector.pk}/_execute",
                          json=run_body(), headers={"kbn-xsrf": "1", "Authorization": basic_auth(operator)},
                          timeout=30)
    assert response.json()["status"] == "error" and 'Budget "team budget"' in response.json()["message"]
    assert fake_openai.requests == []
    alerts.stop_alert_sender()
    reset_counter_store()


def test_an_auditor_of_a_space_reads_its_records_and_one_of_every_space_reads_all(
        client, marketing, make_connector, django_user_model):
    make_connector(name="In default")
    with in_space("marketing"):
        make_connector(name="In marketing", space=marketing)
    assert AuditRecord.objects.filter(space_id="marketing", object_repr="In marketing").exists()
    local = make_user(django_user_model, "lou")
    grant(marketing, "Auditors", user=local)
    client.force_login(local)
    page = client.get("/s/marketing/audit/").content.decode()
    assert "In marketing" in page and "In default" not in page
    everywhere = make_user(django_user_model, "eve", "Auditors")
    client.force_login(everywhere)
    page = client.get("/s/marketing/audit/").content.decode()
    assert "In marketing" in page and "In default" in page


def test_execute_in_the_default_space_is_unchanged(client, make_connector, operator, fake_openai):
    connector = make_connector(provider="Other", api_url=fake_openai.url(), default_model="m")
    assert execute_with_client(client, connector, user=operator).json()["status"] == "ok"
    assert ExecutionEvent.objects.get().space_id == "default"


def test_the_default_space_of_a_call_without_a_prefix_costs_no_query_and_no_new_object(db, django_assert_num_queries):
    directory.forget()  # a worker that has served no page and no /s/<id>/ call has no list of spaces
    with django_assert_num_queries(0):
        first, second = directory.default_space(), directory.default_space()
    assert first.id == "default" and first is second  # one stand-in for the process, not a model built per call
