"""SCIM 2.0 provisioning (/scim/v2/), with requests shaped exactly as Okta and Microsoft Entra ID send them (the
bodies, paths, filters and header of their published SCIM request logs), through the full Django stack.

What matters most is deprovisioning: a user deactivated over SCIM loses their browser session and their API key
at once (the key was verified and cached before), in every server process (two uvicorn workers on PostgreSQL), and
a group change changes what their key may do at once. Single sign-on sessions end SSO_SESSION_MAX_AGE_SECONDS after
the sign-in."""

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from django.contrib.auth import get_user_model
from django.contrib.sessions.models import Session
from django.db import connection
from django.utils import timezone

from bench.harness import free_port, stop, wait_for_port
from connectors.accounts.api_keys import create_api_key
from connectors.accounts.models import ScimUser, SsoIdentity
from connectors.audit.models import AuditRecord
from tests.accounts.test_sso import GROUP_MAP, roles_of, sign_in
from tests.accounts.test_sso import idp as idp  # noqa: F401 - the fixtures of the SSO tests
from tests.accounts.test_sso import running_idp as running_idp  # noqa: F401
from tests.conftest import PASSWORD

TOKEN = "scim-test-token-0123456789abcdef0123456789abcdef"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"


@pytest.fixture
def scim_on(settings):
    settings.SCIM_BEARER_TOKEN = TOKEN
    settings.OIDC_GROUP_MAP = dict(GROUP_MAP)
    return settings


def scim(client, method: str, path: str, body: dict | None = None, *, token: str = TOKEN,
         content_type: str = "application/scim+json; charset=utf-8"):
    """One request as the providers send it: bearer token, SCIM content type, JSON body."""
    kwargs = {"HTTP_AUTHORIZATION": f"Bearer {token}", "HTTP_ACCEPT": "application/scim+json"}
    if body is not None:
        kwargs.update(data=json.dumps(body), content_type=content_type)
    return getattr(client, method.lower())(f"/scim/v2/{path}", **kwargs)


def filtered(resource: str, expression: str, extra: str = "") -> str:
    return f"{resource}?filter={quote(expression)}{extra}"


# Okta's documented requests (developer.okta.com, "SCIM 2.0 protocol reference").
def okta_user(user_name: str = "test.user@okta.local") -> dict:
    return {
        "schemas": [USER_SCHEMA], "userName": user_name, "name": {"givenName": "Test", "familyName": "User"},
        "emails": [{"primary": True, "value": user_name, "type": "work"}], "displayName": "Test User",
        "locale": "en-US", "externalId": "00ujl29u0le5T6Aj10h7", "groups": [], "password": "1mz050nq",
        "active": True,
    }


# Entra ID's documented requests (learn.microsoft.com, "Tutorial: Develop a sample SCIM endpoint", request log).
def entra_user(user_name: str = "Test_User_ab6490ee-1e48-479e-a20b-2d77186b5dd1") -> dict:
    return {
        "schemas": [USER_SCHEMA, ENTERPRISE], "externalId": "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef",
        "userName": user_name, "active": True,
        "emails": [{"primary": True, "type": "work", "value": "Test_User_fd0ea19b@testuser.com"}],
        "meta": {"resourceType": "User"},
        "name": {"formatted": "givenName familyName", "familyName": "familyName", "givenName": "givenName"},
        "roles": [],
    }


def entra_patch(*operations: dict) -> dict:
    return {"schemas": [PATCH_OP], "Operations": list(operations)}


def provision(client, body: dict) -> dict:
    response = scim(client, "POST", "Users", body)
    assert response.status_code == 201, response.content
    return response.json()


@pytest.mark.django_db
class TestAccess:
    def test_scim_is_404_without_a_token_configured(self, client, settings):
        settings.SCIM_BEARER_TOKEN = ""
        response = scim(client, "GET", "Users")
        assert response.status_code == 404
        assert response.json()["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"]

    @pytest.mark.parametrize("authorization", ["", "Bearer wrong-token", f"Basic {TOKEN}", f"Bearer {TOKEN}x"])
    def test_a_missing_or_wrong_token_is_401(self, client, scim_on, authorization):
        response = client.get("/scim/v2/Users", HTTP_AUTHORIZATION=authorization)
        assert response.status_code == 401
        assert response.json() == {"schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"], "status": "401",
                                   "detail": "A valid SCIM bearer token is required."}
        assert response["WWW-Authenticate"].startswith("Bearer")
        assert response["Content-Type"] == "application/scim+json"

    def test_a_session_is_no_scim_credential(self, client, scim_on, admin_user):
        client.force_login(admin_user)
        assert client.get("/scim/v2/Users").status_code == 401


@pytest.mark.django_db
class TestOktaRequests:
    def test_okta_looks_up_creates_reads_updates_and_deactivates_a_user(self, client, scim_on):
        lookup = scim(client, "GET", filtered("Users", 'userName eq "test.user@okta.local"', "&startIndex=1&count=100"))
        assert lookup.status_code == 200
        assert lookup.json() == {"schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
                                 "totalResults": 0, "startIndex": 1, "itemsPerPage": 0, "Resources": []}

        created = scim(client, "POST", "Users", okta_user())
        assert created.status_code == 201
        resource = created.json()
        assert created["Location"] == f"http://testserver/scim/v2/Users/{resource['id']}"
        assert resource["userName"] == "test.user@okta.local" and resource["active"] is True
        assert resource["externalId"] == "00ujl29u0le5T6Aj10h7"
        assert resource["name"] == {"givenName": "Test", "familyName": "User"}
        user = get_user_model().objects.get(username="test.user@okta.local")
        assert user.email == "test.user@okta.local" and not user.has_usable_password()  # Okta's password unused

        found = scim(client, "GET", filtered("Users", 'userName eq "TEST.USER@okta.local"', "&startIndex=1&count=100"))
        assert [r["id"] for r in found.json()["Resources"]] == [resource["id"]]  # userName ignores case

        body = {**okta_user(), "id": resource["id"], "name": {"givenName": "Tess", "familyName": "User"}}
        replaced = scim(client, "PUT", f"Users/{resource['id']}", body)
        assert replaced.status_code == 200 and replaced.json()["name"]["givenName"] == "Tess"

        deactivated = scim(client, "PATCH", f"Users/{resource['id']}",
                           {"schemas": [PATCH_OP], "Operations": [{"op": "replace", "value": {"active": False}}]})
        assert deactivated.status_code == 200 and deactivated.json()["active"] is False
        user.refresh_from_db()
        assert not user.is_active

        reactivated = scim(client, "PATCH", f"Users/{resource['id']}",
                           {"schemas": [PATCH_OP], "Operations": [{"op": "replace", "value": {"active": True}}]})
        assert reactivated.json()["active"] is True

    def test_okta_creating_a_user_twice_is_a_409(self, client, scim_on):
        provision(client, okta_user())
        again = scim(client, "POST", "Users", okta_user("Test.User@okta.local"))
        assert again.status_code == 409
        assert again.json()["scimType"] == "uniqueness" and again.json()["status"] == "409"

    def test_okta_pushes_a_group_adds_and_removes_members_renames_and_deletes_it(self, client, scim_on):
        member = provision(client, okta_user())
        lookup = scim(client, "GET", filtered("Groups", 'displayName eq "connectors-users"', "&startIndex=1&count=100"))
        assert lookup.json()["totalResults"] == 0
        created = scim(client, "POST", "Groups", {"schemas": [GROUP_SCHEMA], "displayName": "connectors-users",
                                                  "members": []})
        assert created.status_code == 201
        group_id = created.json()["id"]

        added = scim(client, "PATCH", f"Groups/{group_id}", {"schemas": [PATCH_OP], "Operations": [
            {"op": "add", "path": "members", "value": [{"value": member["id"], "display": "test.user@okta.local"}]}]})
        assert added.status_code == 200
        assert added.json()["members"] == [{"value": member["id"], "display": "test.user@okta.local"}]
        assert roles_of("test.user@okta.local") == {"Connector users"}

        removed = scim(client, "PATCH", f"Groups/{group_id}", {"schemas": [PATCH_OP], "Operations": [
            {"op": "remove", "path": f'members[value eq "{member["id"]}"]'}]})
        assert removed.status_code == 200 and removed.json()["members"] == []
        assert roles_of("test.user@okta.local") == set()

        scim(client, "PATCH", f"Groups/{group_id}", {"schemas": [PATCH_OP], "Operations": [
            {"op": "add", "path": "members", "value": [{"value": member["id"]}]}]})
        renamed = scim(client, "PATCH", f"Groups/{group_id}", {"schemas": [PATCH_OP], "Operations": [
            {"op": "replace", "value": {"id": group_id, "displayName": "connectors-admins"}}]})
        assert renamed.json()["displayName"] == "connectors-admins"
        assert roles_of("test.user@okta.local") == {"Connector admins"}  # the name is what the map reads

        assert scim(client, "DELETE", f"Groups/{group_id}").status_code == 204
        assert roles_of("test.user@okta.local") == set()
        assert scim(client, "GET", f"Groups/{group_id}").status_code == 404


@pytest.mark.django_db
class TestEntraRequests:
    def test_entra_connection_test_finds_no_user(self, client, scim_on):
        response = scim(client, "GET", filtered("Users", 'userName eq "3fd3a9b8-4cd1-4bd5-a2ea-8f1f2bd53e43"'))
        assert response.status_code == 200 and response.json()["totalResults"] == 0

    def test_entra_creates_updates_and_disables_a_user_with_string_booleans(self, client, scim_on):
        resource = provision(client, entra_user())
        assert resource["emails"] == [{"value": "Test_User_fd0ea19b@testuser.com", "type": "work", "primary": True}]
        by_external_id = scim(client, "GET", filtered("Users", 'externalId eq "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef"'))
        assert by_external_id.json()["totalResults"] == 1

        updated = scim(client, "PATCH", f"Users/{resource['id']}", entra_patch(
            {"op": "Add", "path": "displayName", "value": "Updated Name"},
            {"op": "Replace", "path": 'emails[type eq "work"].value', "value": "updatedEmail@microsoft.com"},
            {"op": "Replace", "path": "name.familyName", "value": "updatedFamilyName"},
            {"op": "Add", "path": f"{ENTERPRISE}:department", "value": "Finance"},  # accepted, not kept
        ))
        assert updated.status_code == 200, updated.content
        body = updated.json()
        assert body["displayName"] == "Updated Name" and body["name"]["familyName"] == "updatedFamilyName"
        assert body["emails"][0]["value"] == "updatedEmail@microsoft.com"

        disabled = scim(client, "PATCH", f"Users/{resource['id']}",
                        entra_patch({"op": "Replace", "path": "active", "value": "False"}))
        assert disabled.status_code == 200 and disabled.json()["active"] is False
        assert not get_user_model().objects.get(username=entra_user()["userName"]).is_active

    def test_entra_groups_by_object_id_members_added_and_removed(self, client, scim_on, settings):
        object_id = "8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159"
        settings.OIDC_GROUP_MAP = {object_id: "Usage viewers"}  # Entra's groups claim holds object ids
        member = provision(client, entra_user())
        created = scim(client, "POST", "Groups", {"schemas": [GROUP_SCHEMA], "externalId": object_id,
                                                  "displayName": "Finance analysts", "meta": {"resourceType": "Group"}})
        assert created.status_code == 201
        group_id = created.json()["id"]
        found = scim(client, "GET", filtered("Groups", 'displayName eq "Finance analysts"', "")
                     + "&excludedAttributes=members")
        assert found.json()["totalResults"] == 1 and "members" not in found.json()["Resources"][0]

        scim(client, "PATCH", f"Groups/{group_id}",
             entra_patch({"op": "Add", "path": "members", "value": [{"value": member["id"]}]}))
        assert roles_of(entra_user()["userName"]) == {"Usage viewers"}
        removed = scim(client, "PATCH", f"Groups/{group_id}",
                       entra_patch({"op": "Remove", "path": "members", "value": [{"value": member["id"]}]}))
        assert removed.status_code == 200
        assert roles_of(entra_user()["userName"]) == set()

    def test_entra_deletes_a_user(self, client, scim_on):
        resource = provision(client, entra_user())
        user = get_user_model().objects.get(username=entra_user()["userName"])
        record, _ = create_api_key(user, "script")
        assert scim(client, "DELETE", f"Users/{resource['id']}").status_code == 204
        user.refresh_from_db()
        record.refresh_from_db()
        assert not user.is_active and record.revoked_at is not None
        assert scim(client, "GET", f"Users/{resource['id']}").status_code == 404
        assert scim(client, "GET", filtered("Users", f'userName eq "{entra_user()["userName"]}"')).json()[
            "totalResults"] == 0
        # Provisioned again later: the same account comes back, active.
        again = provision(client, entra_user())
        assert again["id"] != resource["id"] and again["active"] is True
        assert get_user_model().objects.filter(username=entra_user()["userName"]).count() == 1


@pytest.mark.django_db
class TestRefusals:
    @pytest.mark.parametrize("expression", ['userName co "x"', 'title eq "x"', "userName eq x",
                                            'userName eq "a" or userName eq "b"'])
    def test_an_unsupported_filter_is_a_400_invalid_filter(self, client, scim_on, expression):
        response = scim(client, "GET", filtered("Users", expression))
        assert response.status_code == 400 and response.json()["scimType"] == "invalidFilter"

    @pytest.mark.parametrize("query", ["startIndex=x", "count=1.5", f"startIndex={10**20}"])
    def test_bad_paging_is_a_400(self, client, scim_on, query):
        response = scim(client, "GET", f"Users?{query}")
        assert response.status_code == 400 and response.json()["scimType"] == "invalidValue"

    def test_paging_counts_from_one(self, client, scim_on):
        ids = [provision(client, okta_user(f"user{n}@okta.local"))["id"] for n in range(3)]
        page = scim(client, "GET", "Users?startIndex=2&count=1").json()
        assert page["totalResults"] == 3 and page["startIndex"] == 2 and page["itemsPerPage"] == 1
        assert [r["id"] for r in page["Resources"]] == ids[1:2]

    @pytest.mark.parametrize("value", ["maybe", 1, None, "Falsch"])
    def test_active_must_be_a_boolean(self, client, scim_on, value):
        resource = provision(client, okta_user())
        response = scim(client, "PATCH", f"Users/{resource['id']}",
                        entra_patch({"op": "Replace", "path": "active", "value": value}))
        assert response.status_code == 400 and response.json()["scimType"] == "invalidValue"
        assert get_user_model().objects.get(username="test.user@okta.local").is_active

    @pytest.mark.parametrize("body", [
        {"userName": ""}, {"userName": 5}, {"userName": "a\x00b"}, {"userName": "x" * 151},
        {"userName": "ok", "emails": "nope"}, {"userName": "ok", "name": "nope"},
    ])
    def test_bad_user_values_are_a_400(self, client, scim_on, body):
        response = scim(client, "POST", "Users", {"schemas": [USER_SCHEMA], **body})
        assert response.status_code == 400, response.content
        assert response.json()["scimType"] == "invalidValue"
        assert not ScimUser.objects.exists()

    @pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b'{"a": NaN}', b"[" * 500])
    def test_a_body_that_is_no_json_object_is_a_400(self, client, scim_on, raw):
        response = client.post("/scim/v2/Users", raw, content_type="application/scim+json",
                               HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
        assert response.status_code == 400 and response.json()["scimType"] == "invalidSyntax"

    def test_a_patch_without_its_schema_or_operations_is_a_400(self, client, scim_on):
        resource = provision(client, okta_user())
        for body in ({"Operations": [{"op": "replace", "value": {"active": False}}]},
                     {"schemas": [PATCH_OP], "Operations": []},
                     {"schemas": [PATCH_OP], "Operations": [{"op": "move", "path": "active"}]}):
            assert scim(client, "PATCH", f"Users/{resource['id']}", body).status_code == 400

    def test_unknown_ids_are_a_404(self, client, scim_on):
        for path in ("Users/not-a-uuid", "Users/3fd3a9b8-4cd1-4bd5-a2ea-8f1f2bd53e43", "Groups/nope"):
            response = scim(client, "GET", path)
            assert response.status_code == 404 and response.json()["status"] == "404"

    def test_a_member_that_is_no_provisioned_user_is_a_400(self, client, scim_on):
        response = scim(client, "POST", "Groups", {"schemas": [GROUP_SCHEMA], "displayName": "g",
                                                   "members": [{"value": "3fd3a9b8-4cd1-4bd5-a2ea-8f1f2bd53e43"}]})
        assert response.status_code == 400 and response.json()["scimType"] == "invalidValue"

    def test_a_duplicate_group_name_is_a_409(self, client, scim_on):
        scim(client, "POST", "Groups", {"schemas": [GROUP_SCHEMA], "displayName": "Team"})
        response = scim(client, "POST", "Groups", {"schemas": [GROUP_SCHEMA], "displayName": "team"})
        assert response.status_code == 409 and response.json()["scimType"] == "uniqueness"

    def test_a_local_account_is_never_taken_over(self, client, scim_on, operator):
        response = scim(client, "POST", "Users", okta_user("olivia"))
        assert response.status_code == 409
        operator.refresh_from_db()
        assert operator.is_active and not ScimUser.objects.exists()

    def test_a_non_scim_content_type_is_a_415(self, client, scim_on):
        response = scim(client, "POST", "Users", okta_user(), content_type="text/plain")
        assert response.status_code == 415


@pytest.mark.django_db
class TestDeprovisioning:
    """A person provisioned by SCIM signs in with SSO and makes an API key; the provider then takes access away."""

    def signed_in_with_a_key(self, client, idp, connector_path="/api/actions/connectors"):  # noqa: F811
        idp.users["bob"].groups = ["connectors-users"]  # the provider's claim and its SCIM groups agree
        resource = provision(client, {**okta_user("bob"), "externalId": "idp-0002"})
        group = scim(client, "POST", "Groups", {"schemas": [GROUP_SCHEMA], "displayName": "connectors-users",
                                                "members": [{"value": resource["id"]}]}).json()
        browser = client.__class__()
        assert sign_in(browser, idp, "bob").status_code == 302
        user = get_user_model().objects.get(username="bob")
        assert SsoIdentity.objects.get(user=user).subject == "idp-0002"  # linked to the provisioned user
        _record, key = create_api_key(user, "script")
        api_key = {"HTTP_AUTHORIZATION": f"ApiKey {key}"}
        assert client.get(connector_path, **api_key).status_code == 200  # verified, and now cached
        assert client.get(connector_path, **api_key).status_code == 200
        assert browser.get("/connectors/").status_code == 200
        return resource, group, browser, api_key, user

    def test_deactivation_ends_the_session_and_refuses_the_api_key_at_once(self, client, scim_on, idp):  # noqa: F811
        resource, _group, browser, api_key, user = self.signed_in_with_a_key(client, idp)
        assert Session.objects.count() == 1

        response = scim(client, "PATCH", f"Users/{resource['id']}",
                        entra_patch({"op": "Replace", "path": "active", "value": "False"}))
        assert response.status_code == 200

        refused = client.get("/api/actions/connectors", **api_key)
        assert refused.status_code == 401
        assert Session.objects.count() == 0
        page = browser.get("/connectors/")
        assert page.status_code == 302 and page["Location"].startswith("/accounts/login/")
        record = AuditRecord.objects.get(action="deprovision", object_id=str(user.pk))
        assert record.actor == "scim" and record.via == "api" and record.changes == {"sessions_ended": 1}
        updates = AuditRecord.objects.filter(action="update", object_id=str(user.pk), object_type="user")
        assert [(r.changes["is_active"], r.actor) for r in updates if "is_active" in r.changes] == [
            ([True, False], "scim")]
        # And a sign-in is refused while the provider keeps the account disabled.
        assert sign_in(client.__class__(), idp, "bob").status_code == 400

    def test_a_group_removal_takes_the_permission_from_the_key_at_once(self, client, scim_on, idp):  # noqa: F811
        resource, group, browser, api_key, _user = self.signed_in_with_a_key(client, idp)
        scim(client, "PATCH", f"Groups/{group['id']}", {"schemas": [PATCH_OP], "Operations": [
            {"op": "remove", "path": f'members[value eq "{resource["id"]}"]'}]})
        assert client.get("/api/actions/connectors", **api_key).status_code == 403
        assert browser.get("/connectors/").status_code == 403
        scim(client, "PATCH", f"Groups/{group['id']}", {"schemas": [PATCH_OP], "Operations": [
            {"op": "add", "path": "members", "value": [{"value": resource["id"]}]}]})
        assert client.get("/api/actions/connectors", **api_key).status_code == 200


@pytest.mark.django_db
class TestSsoSessions:
    def test_an_sso_session_ends_at_a_fixed_time_after_sign_in(self, client, idp, settings):  # noqa: F811
        settings.SSO_SESSION_MAX_AGE_SECONDS = 8 * 3600
        before = timezone.now()
        response = sign_in(client, idp, "bob")
        assert response.cookies["sessionid"]["max-age"] <= 8 * 3600
        session = Session.objects.get()
        assert before + timedelta(hours=8) <= session.expire_date <= timezone.now() + timedelta(hours=8)
        ends = session.expire_date
        client.get("/account/api-keys/")
        client.post("/account/api-keys/", {"name": "x"})  # writes to the session (messages): no extension
        assert Session.objects.get().expire_date == ends
        # Eight hours later (the stored end moved into the past, as time would move it), the session is over.
        Session.objects.update(expire_date=timezone.now() - timedelta(seconds=1))
        assert client.get("/account/api-keys/")["Location"].startswith("/accounts/login/")

    def test_a_password_sign_in_keeps_djangos_session_age(self, client, settings, operator):
        assert client.post("/accounts/login/", {"username": "olivia", "password": PASSWORD}).status_code == 302
        assert client.session.get_expiry_age() == settings.SESSION_COOKIE_AGE

    def test_an_sso_session_survives_local_logins_limited_to_superusers(self, client, idp, settings):  # noqa: F811
        settings.LOCAL_LOGIN_SUPERUSERS_ONLY = True
        sign_in(client, idp, "bob")
        assert client.get("/account/api-keys/").status_code == 200


# --- two server processes on PostgreSQL ---------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif("connection.vendor != 'postgresql'",
                    reason="several server processes share one database: PostgreSQL's case (CI runs it)")
def test_deactivation_reaches_every_server_process_at_once():
    """Two uvicorn workers each verify and cache the key; one of them serves the SCIM deactivation; from then on
    neither accepts the key (the other learns it through NOTIFY, long before its cache would expire)."""
    db = connection.settings_dict
    port = free_port()
    env = {**os.environ, "ENV_FILE": "", "DEBUG": "false", "ALLOWED_HOSTS": "127.0.0.1",
           "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
           "SCIM_BEARER_TOKEN": TOKEN, "OIDC_GROUP_MAP": "connectors-users=Connector users",
           "BASIC_AUTH_CACHE_SECONDS": "3600"}
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "connectors_admin.asgi:application", "--host", "127.0.0.1", "--port",
         str(port), "--workers", "2", "--no-access-log", "--log-level", "warning"],
        cwd=Path(__file__).resolve().parents[2], env=env)
    try:
        wait_for_port(port, process, timeout=60)
        base = f"http://127.0.0.1:{port}"
        scim_headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/scim+json"}
        resource = httpx.post(f"{base}/scim/v2/Users", content=json.dumps(okta_user()), headers=scim_headers).json()
        httpx.post(f"{base}/scim/v2/Groups", headers=scim_headers, content=json.dumps(
            {"schemas": [GROUP_SCHEMA], "displayName": "connectors-users", "members": [{"value": resource["id"]}]}))
        _record, key = create_api_key(get_user_model().objects.get(username="test.user@okta.local"), "script")

        def statuses(count: int) -> set[int]:  # a new connection each time: the calls spread over both workers
            return {httpx.get(f"{base}/api/actions/connectors", headers={"Authorization": f"ApiKey {key}"},
                              timeout=30).status_code for _ in range(count)}

        assert statuses(30) == {200}
        patched = httpx.patch(f"{base}/scim/v2/Users/{resource['id']}", headers=scim_headers, content=json.dumps(
            entra_patch({"op": "Replace", "path": "active", "value": "False"})))
        assert patched.status_code == 200
        assert statuses(60) == {401}
    finally:
        stop(process)
