"""The permission matrix of every management page: anonymous, no capability, each role, superuser."""

import pytest

pytestmark = pytest.mark.django_db

# (name, method, path template, {persona: status}); anonymous is always sent to the login page.
PAGES = [
    ("list", "GET", "/connectors/", {"admin": 200, "connector_admin": 200, "operator": 200, "analyst": 403, "outsider": 403}),
    ("create form", "GET", "/connectors/new/", {"admin": 200, "connector_admin": 200, "operator": 403, "analyst": 403, "outsider": 403}),
    ("create", "POST", "/connectors/new/", {"admin": 302, "connector_admin": 302, "operator": 403, "analyst": 403, "outsider": 403}),
    ("detail", "GET", "/connectors/{id}/", {"admin": 200, "connector_admin": 200, "operator": 200, "analyst": 403, "outsider": 403}),
    ("edit form", "GET", "/connectors/{id}/edit/", {"admin": 200, "connector_admin": 200, "operator": 403, "analyst": 403, "outsider": 403}),
    ("edit", "POST", "/connectors/{id}/edit/", {"admin": 302, "connector_admin": 302, "operator": 403, "analyst": 403, "outsider": 403}),
    ("delete form", "GET", "/connectors/{id}/delete/", {"admin": 200, "connector_admin": 200, "operator": 403, "analyst": 403, "outsider": 403}),
    ("delete", "POST", "/connectors/{id}/delete/", {"admin": 302, "connector_admin": 302, "operator": 403, "analyst": 403, "outsider": 403}),
    ("api keys", "GET", "/account/api-keys/", {"admin": 200, "connector_admin": 200, "operator": 200, "analyst": 200, "outsider": 200}),
    ("django admin", "GET", "/admin/", {"admin": 200, "connector_admin": 403, "operator": 403, "analyst": 403, "outsider": 403}),
]

FORM = {
    "name": "Permitted", "provider": "OpenAI", "api_url": "https://api.openai.com/v1/chat/completions",
    "default_model": "", "organization_id": "", "project_id": "", "headers": "", "api_key": "sk-x",
}


@pytest.mark.parametrize("name, method, path, expected", PAGES, ids=[p[0] for p in PAGES])
@pytest.mark.parametrize("persona", ["admin", "connector_admin", "operator", "analyst", "outsider"])
def test_each_page_for_each_persona(client, personas, make_connector, name, method, path, expected, persona):
    connector = make_connector()
    client.force_login(personas[persona])
    url = path.replace("{id}", connector.pk)
    response = client.post(url, FORM) if method == "POST" else client.get(url)
    assert response.status_code == expected[persona], (name, persona)


@pytest.mark.parametrize("name, method, path, expected", PAGES, ids=[p[0] for p in PAGES])
def test_anonymous_users_are_sent_to_login(client, make_connector, name, method, path, expected):
    connector = make_connector()
    url = path.replace("{id}", connector.pk)
    response = client.post(url, FORM) if method == "POST" else client.get(url)
    assert response.status_code == 302
    assert "/login/" in response["Location"]


def test_the_home_page_sends_each_role_where_it_can_work(client, personas):
    client.force_login(personas["operator"])
    assert client.get("/")["Location"] == "/connectors/"
    client.force_login(personas["outsider"])
    assert "has no role yet" in client.get("/").content.decode()


def test_buttons_follow_the_capabilities(client, personas, make_connector):
    connector = make_connector()
    client.force_login(personas["operator"])
    html = client.get(f"/connectors/{connector.pk}/").content.decode()
    assert "/edit/" not in html and "/delete/" not in html and "data-test-form" in html
    client.force_login(personas["connector_admin"])
    html = client.get(f"/connectors/{connector.pk}/").content.decode()
    assert "/edit/" in html and "/delete/" in html


def test_the_usage_dashboard_link_shows_only_to_usage_viewers(client, personas, make_connector, django_user_model):
    from django.contrib.auth.models import Group

    connector = make_connector(name="Linked")
    link = 'View OpenAI Usage Dashboard for "Linked" Connector'
    client.force_login(personas["operator"])
    assert link not in client.get(f"/connectors/{connector.pk}/").content.decode()
    personas["operator"].groups.add(Group.objects.get(name="Usage viewers"))
    assert link in client.get(f"/connectors/{connector.pk}/").content.decode().replace("&quot;", '"')
    client.force_login(personas["admin"])
    assert link in client.get(f"/connectors/{connector.pk}/").content.decode().replace("&quot;", '"')


def test_roles_are_groups_with_exactly_their_permissions():
    from django.contrib.auth.models import Group

    def codenames(group):
        return sorted(f"{p.content_type.app_label}.{p.codename}" for p in Group.objects.get(name=group).permissions.all())

    from usage.governance.permissions import ROLES as GOVERNANCE_ROLES

    assert codenames("Connector admins") == sorted([
        "connectors.add_connector", "connectors.change_connector", "connectors.delete_connector",
        "connectors.execute_connector", "connectors.view_connector", "usage.view_usage_dashboard",
        *GOVERNANCE_ROLES["Connector admins"],
    ])
    assert "governance.add_budget" in codenames("Connector admins")
    assert codenames("Connector users") == ["connectors.execute_connector", "connectors.view_connector"]
    assert codenames("Usage viewers") == ["usage.view_usage_dashboard"]


def test_syncing_roles_again_changes_nothing():
    from django.contrib.auth.models import Group

    from connectors.access.roles import sync_roles

    before = {g.name: set(g.permissions.values_list("pk", flat=True)) for g in Group.objects.all()}
    sync_roles(app_label="connectors")
    after = {g.name: set(g.permissions.values_list("pk", flat=True)) for g in Group.objects.all()}
    assert before == after and len(after) == 4


def test_each_app_syncs_only_its_share_of_a_role():
    """Connector admins is made of connectors', usage's and governance's shares; syncing one app keeps the others."""
    from django.contrib.auth.models import Group

    from connectors.access.roles import sync_roles
    from usage.governance.permissions import ROLES as GOVERNANCE_ROLES

    group = Group.objects.get(name="Connector admins")
    group.permissions.remove(*group.permissions.filter(content_type__app_label="connectors"))
    sync_roles(app_label="connectors")
    assert group.permissions.filter(content_type__app_label="governance").count() == len(
        GOVERNANCE_ROLES["Connector admins"])
    assert group.permissions.filter(content_type__app_label="connectors").count() == 5
    sync_roles(app_label="governance")
    assert group.permissions.filter(content_type__app_label="connectors").count() == 5


def test_the_role_registry_sees_every_app_s_roles():
    from connectors.access.roles import roles_granting

    assert roles_granting("audit.view_auditrecord") == ["Auditors"]
    assert roles_granting("governance.add_budget") == ["Connector admins"]
    assert sorted(roles_granting("usage.view_usage_dashboard")) == ["Connector admins", "Usage viewers"]
    assert sorted(roles_granting("connectors.execute_connector")) == ["Connector admins", "Connector users"]


@pytest.mark.parametrize("url, permission, role", [
    ("/audit/", "audit.view_auditrecord", "Auditors"),
    ("/usage/budgets/", "governance.view_budget", "Connector admins"),
    ("/usage/budgets/new/", "governance.add_budget", "Connector admins"),
    ("/usage/prices/", "governance.view_price", "Connector admins"),
    ("/usage/alerts/", "governance.view_alert", "Connector admins"),
    ("/usage/", "usage.view_usage_dashboard", "Usage viewers"),
    ("/connectors/", "connectors.view_connector", "Connector users"),
])
def test_every_403_page_names_the_permission_and_a_role_that_grants_it(client, personas, url, permission, role):
    client.force_login(personas["outsider"])
    response = client.get(url)
    assert response.status_code == 403
    text = response.content.decode()
    assert permission in text and role in text
