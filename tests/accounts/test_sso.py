"""Single sign-on against a real OpenID Connect provider (tests/servers/oidc_provider.py) over real sockets: discovery,
PKCE, the code exchange, ID-token validation (signature, expiry), users created on first sign-in, roles from the
groups claim applied at every sign-in, the audit records, and turning local passwords off. The last tests drive
the whole flow in Chromium."""

from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from connectors.accounts.models import SsoIdentity
from connectors.audit.models import AuditRecord
from tests.browser.fixtures import screenshot
from tests.conftest import PASSWORD, basic_auth
from tests.servers.oidc_provider import CLIENT_ID, CLIENT_SECRET, IdpUser, OidcProvider

GROUP_MAP = {
    "connectors-admins": "Connector admins",
    "connectors-users": "Connector users",
    "usage": "Usage viewers",
    "auditors": "Auditors",
    "connectors-superusers": "superuser",
}


@pytest.fixture(scope="module")
def running_idp():
    provider = OidcProvider().start()
    yield provider
    provider.stop()


@pytest.fixture
def idp(running_idp, settings):
    running_idp.users = {
        "alice": IdpUser(sub="idp-0001", groups=["connectors-admins", "auditors"], email="alice@example.com",
                         given_name="Alice", family_name="Liddell"),
        "bob": IdpUser(sub="idp-0002", groups=["connectors-users"]),
        "carol": IdpUser(sub="idp-0003", groups=["connectors-superusers"]),
    }
    running_idp.misbehave = ""
    running_idp.token_requests.clear()
    running_idp.authorization_requests.clear()
    running_idp.redirect_uri_prefixes = ["http://testserver/"]
    settings.OIDC_ISSUER_URL = running_idp.issuer
    settings.OIDC_CLIENT_ID = CLIENT_ID
    settings.OIDC_CLIENT_SECRET = CLIENT_SECRET
    settings.OIDC_SCOPES = "openid email profile"
    settings.OIDC_PROVIDER_NAME = "Test IdP"
    settings.OIDC_GROUPS_CLAIM = "groups"
    settings.OIDC_GROUP_MAP = dict(GROUP_MAP)
    return running_idp


def sign_in(client, idp, username: str):
    """The flow a browser follows, with the test client for the app and httpx for the provider's login form."""
    start = client.get("/accounts/sso/login/")
    assert start.status_code == 302, start.content
    authorize_url = start["Location"]
    assert authorize_url.startswith(f"{idp.issuer}/authorize?")
    assert httpx.get(authorize_url).status_code == 200  # the provider's login form
    params = {k: v[0] for k, v in parse_qs(urlsplit(authorize_url).query).items()}
    answer = httpx.post(f"{idp.issuer}/authorize", data={**params, "username": username})
    assert answer.status_code == 302, answer.text
    callback = urlsplit(answer.headers["location"])
    return client.get(f"{callback.path}?{callback.query}")


def roles_of(username: str) -> set[str]:
    user = get_user_model().objects.get(username=username)
    roles = set(user.groups.values_list("name", flat=True))
    return roles | {"superuser"} if user.is_superuser else roles


@pytest.mark.django_db
class TestSignIn:
    def test_the_login_page_offers_the_provider(self, client, idp):
        assert "Sign in with Test IdP" in client.get("/accounts/login/").content.decode()

    def test_no_button_and_no_route_without_configuration(self, client, settings):
        settings.OIDC_ISSUER_URL = settings.OIDC_CLIENT_ID = ""
        assert "Sign in with" not in client.get("/accounts/login/").content.decode()
        assert client.get("/accounts/sso/login/").status_code == 404

    def test_the_authorization_request_uses_discovery_pkce_state_and_nonce(self, client, idp):
        location = client.get("/accounts/sso/login/")["Location"]
        params = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
        assert location.startswith(idp.discovery()["authorization_endpoint"])
        assert params["client_id"] == CLIENT_ID and params["response_type"] == "code"
        assert params["code_challenge_method"] == "S256" and len(params["code_challenge"]) == 43
        assert params["state"] and params["nonce"] and set(params["scope"].split()) == {"openid", "email", "profile"}
        assert params["redirect_uri"] == "http://testserver/accounts/sso/callback/"

    def test_first_sign_in_creates_the_user_with_the_mapped_roles(self, client, idp):
        response = sign_in(client, idp, "alice")
        assert response.status_code == 302 and response["Location"] == "/"
        user = get_user_model().objects.get(username="alice")
        assert client.session["_auth_user_id"] == str(user.pk)
        assert (user.email, user.first_name, user.last_name) == ("alice@example.com", "Alice", "Liddell")
        assert not user.has_usable_password()
        assert roles_of("alice") == {"Connector admins", "Auditors"}
        assert SsoIdentity.objects.get(user=user).subject == "idp-0001"
        # The code was exchanged with the PKCE verifier and the client's secret (the provider checks both).
        assert idp.token_requests[-1]["code_verifier"]
        signed_in = AuditRecord.objects.get(action="sign_in", actor="alice")
        assert signed_in.changes == {"method": "sso"} and signed_in.via == "sso"
        granted = AuditRecord.objects.filter(action="grant", object_type="user", object_id=str(user.pk)).values_list("changes", flat=True)
        assert sorted(name for change in granted for name in change["role"]) == ["Auditors", "Connector admins"]
        assert {r.via for r in AuditRecord.objects.filter(object_type="user", object_id=str(user.pk), action__in=["create", "grant"])} == {"sso"}

    def test_roles_follow_the_provider_at_every_sign_in(self, client, idp):
        sign_in(client, idp, "alice")
        user = get_user_model().objects.get(username="alice")
        user.groups.add(Group.objects.get(name="Usage viewers"))  # "usage" is mapped: managed by the provider
        idp.users["alice"].groups = ["connectors-users", "connectors-superusers"]
        client.logout()
        sign_in(client, idp, "alice")
        assert roles_of("alice") == {"Connector users", "superuser"}
        assert get_user_model().objects.get(username="alice").is_staff
        removed = AuditRecord.objects.filter(action="remove", object_type="user", object_id=str(user.pk)).last()
        assert removed.changes == {"role": ["Auditors", "Connector admins", "Usage viewers"]}
        superuser = AuditRecord.objects.filter(action="update", object_type="user", object_id=str(user.pk)).last()
        assert superuser.changes["is_superuser"] == [False, True] and superuser.via == "sso"

        idp.users["alice"].groups = []
        client.logout()
        sign_in(client, idp, "alice")
        assert roles_of("alice") == set()

    def test_groups_not_in_the_mapping_are_left_alone(self, client, idp, settings):
        settings.OIDC_GROUP_MAP = {"connectors-users": "Connector users"}
        sign_in(client, idp, "bob")
        bob = get_user_model().objects.get(username="bob")
        bob.groups.add(Group.objects.get(name="Auditors"))  # given by hand in /admin/
        client.logout()
        sign_in(client, idp, "bob")
        assert roles_of("bob") == {"Connector users", "Auditors"}

    def test_a_local_account_with_the_same_name_is_never_taken_over(self, client, idp, django_user_model):
        local = django_user_model.objects.create_superuser("carol", "carol@example.com", PASSWORD)
        idp.users["carol"].groups = []
        sign_in(client, idp, "carol")
        created = SsoIdentity.objects.get(subject="idp-0003").user
        assert created.pk != local.pk and created.username.startswith("carol-")
        local.refresh_from_db()
        assert local.is_superuser

    def test_the_same_subject_signs_in_to_the_same_user(self, client, idp):
        sign_in(client, idp, "bob")
        client.logout()
        sign_in(client, idp, "bob")
        assert get_user_model().objects.filter(username__startswith="bob").count() == 1


@pytest.mark.django_db
class TestRefused:
    @pytest.mark.parametrize("misbehave", ["tampered", "expired", "no_id_token"])
    def test_a_bad_id_token_is_refused(self, client, idp, misbehave):
        idp.misbehave = misbehave
        response = sign_in(client, idp, "bob")
        assert response.status_code == 400
        assert "could not be verified" in response.content.decode() or "no ID token" in response.content.decode()
        assert "_auth_user_id" not in client.session
        assert not get_user_model().objects.filter(username="bob").exists()
        failed = AuditRecord.objects.get(action="sign_in_failed")
        assert failed.changes == {"method": "sso"} and failed.via == "sso"

    def test_a_tampered_token_grants_nothing_even_to_a_known_user(self, client, idp):
        sign_in(client, idp, "bob")
        client.logout()
        idp.misbehave = "tampered"  # adds "connectors-superusers" to the groups claim after signing
        assert sign_in(client, idp, "bob").status_code == 400
        assert roles_of("bob") == {"Connector users"}

    def test_a_callback_without_a_matching_state_is_refused(self, client, idp):
        assert client.get("/accounts/sso/callback/?code=abc&state=forged").status_code == 400
        assert "_auth_user_id" not in client.session

    def test_an_error_from_the_provider_is_shown_not_a_500(self, client, idp):
        client.get("/accounts/sso/login/")
        response = client.get("/accounts/sso/callback/?error=access_denied&error_description=nope")
        assert response.status_code == 400

    def test_an_unreachable_provider_is_a_clear_error(self, client, settings):
        settings.OIDC_ISSUER_URL = "http://127.0.0.1:9"  # nothing listens on the discard port
        settings.OIDC_CLIENT_ID = CLIENT_ID
        response = client.get("/accounts/sso/login/")
        assert response.status_code == 502
        assert "could not be reached" in response.content.decode()

    def test_a_group_map_naming_an_unknown_group_is_refused_clearly(self, client, idp, settings):
        settings.OIDC_GROUP_MAP = {"connectors-users": "No such group"}
        response = sign_in(client, idp, "bob")
        assert response.status_code == 400 and "No such group" in response.content.decode()


@pytest.mark.django_db
class TestLocalLogins:
    def test_local_passwords_can_be_limited_to_superusers(self, client, settings, idp, operator, admin_user,
                                                          make_connector):
        settings.LOCAL_LOGIN_SUPERUSERS_ONLY = True
        assert client.post("/accounts/login/", {"username": "olivia", "password": PASSWORD}).status_code == 200
        assert "_auth_user_id" not in client.session
        connector = make_connector()
        path = f"/api/actions/connector/{connector.pk}"
        assert client.get(path, HTTP_AUTHORIZATION=basic_auth(operator)).status_code == 401
        assert client.post("/accounts/login/", {"username": "root", "password": PASSWORD}).status_code == 302
        page = client.get("/accounts/login/").content.decode()
        assert "for administrators only" in page

    def test_local_passwords_work_by_default(self, client, idp, operator):
        assert client.post("/accounts/login/", {"username": "olivia", "password": PASSWORD}).status_code == 302


# --- in Chromium ------------------------------------------------------------------------------------------------------


@pytest.fixture
def browser_idp(idp, live_server):
    idp.redirect_uri_prefixes = [live_server.url]
    return idp


def browser_sign_in(page, live_server, username: str) -> None:
    page.goto(f"{live_server.url}/accounts/login/")
    page.click("text=Sign in with Test IdP")
    page.wait_for_selector("#idp-username")  # the provider's own page
    page.fill("#idp-username", username)
    page.click("#idp-sign-in")
    page.wait_for_url(lambda url: url.startswith(live_server.url))  # back from the provider, to the app
    page.wait_for_load_state()


def test_in_chromium_sign_in_roles_and_a_group_removed_at_the_provider(page, live_server, browser_idp):
    browser_sign_in(page, live_server, "alice")
    assert page.url.startswith(f"{live_server.url}/connectors/")  # Connector admins land on the connector list
    assert page.locator("nav").get_by_text("Log out alice").is_visible()
    assert page.locator("nav a", has_text="Audit").is_visible()  # the Auditors role came from the provider
    page.click("nav a:text('Audit')")
    page.wait_for_url(f"{live_server.url}/audit/")
    page.locator("td", has_text="sign in").first.wait_for()  # fails the test if it never appears
    screenshot(page, "sso-signed-in-audit")

    browser_idp.users["alice"].groups = ["connectors-admins"]  # removed from auditors at the provider
    page.click("text=Log out alice")
    page.wait_for_url(f"{live_server.url}/accounts/login/")
    browser_sign_in(page, live_server, "alice")
    assert page.locator("nav a", has_text="Audit").count() == 0
    assert page.goto(f"{live_server.url}/audit/").status == 403
    assert roles_of("alice") == {"Connector admins"}


def test_in_chromium_a_tampered_token_is_refused(page, live_server, browser_idp):
    browser_idp.misbehave = "tampered"
    browser_sign_in(page, live_server, "bob")
    assert page.get_by_role("alert").inner_text() == "The sign-in could not be verified. Try again."
    assert "Log out" not in page.content()
    screenshot(page, "sso-tampered-token")
    browser_idp.misbehave = "expired"
    browser_sign_in(page, live_server, "bob")
    assert page.get_by_role("alert").inner_text() == "The sign-in could not be verified. Try again."
    assert not get_user_model().objects.filter(username="bob").exists()


@pytest.mark.django_db
def test_an_idp_group_can_give_a_role_in_one_space_and_the_grant_follows_the_provider(client, idp, settings):
    from connectors.spaces.models import Space, SpaceRoleGrant

    Space.objects.create(id="marketing", name="Marketing")
    settings.OIDC_GROUP_MAP = {**settings.OIDC_GROUP_MAP, "marketing-devs": "Connector users@marketing"}
    idp.users["bob"].groups = ["marketing-devs"]
    sign_in(client, idp, "bob")
    bob = get_user_model().objects.get(username="bob")
    assert list(SpaceRoleGrant.objects.filter(user=bob).values_list("role__name", "space_id")) == [
        ("Connector users", "marketing")]
    assert roles_of("bob") == set()  # in that space only, not every space
    idp.users["bob"].groups = []
    client.logout()
    sign_in(client, idp, "bob")
    assert not SpaceRoleGrant.objects.filter(user=bob).exists()
