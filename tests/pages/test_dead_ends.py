"""No dead ends: each role's home page, the admin site for accounts that are not staff, the error pages (also
with DEBUG on, as under `make run`), the favicon."""

import pytest
from django.contrib.auth.models import Group

from tests.conftest import make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def auditor(django_user_model):
    return make_user(django_user_model, "audrey", "Auditors")


@pytest.mark.parametrize(("persona", "home"), [
    ("admin_user", "/connectors/"), ("connector_admin", "/connectors/"), ("operator", "/connectors/"),
    ("analyst", "/usage/"), ("auditor", "/audit/"),
])
def test_each_role_lands_on_its_pages(client, request, persona, home):
    client.force_login(request.getfixturevalue(persona))
    response = client.get("/")
    assert response.status_code == 302 and response["Location"] == home


def test_an_account_without_a_role_is_told_which_roles_exist(client, outsider):
    client.force_login(outsider)
    page = client.get("/").content.decode()
    for role in Group.objects.values_list("name", flat=True):
        assert role in page


@pytest.mark.parametrize("url", ["/admin/", "/admin/connectors/connector/"])
def test_the_admin_site_answers_a_signed_in_account_that_is_not_staff_with_a_403(client, connector_admin, url):
    client.force_login(connector_admin)
    response = client.get(url)
    assert response.status_code == 403
    page = response.content.decode()
    assert "staff" in page and 'href="/"' in page and 'href="/static/css/app.css"' in page


def test_the_admin_site_still_asks_a_visitor_to_sign_in_and_opens_for_staff(client, admin_user):
    assert client.get("/admin/")["Location"].startswith("/admin/login/")
    client.force_login(admin_user)
    assert client.get("/admin/").status_code == 200


def test_the_403_page_has_a_way_back(client, outsider):
    client.force_login(outsider)
    page = client.get("/usage/").content.decode()
    assert "data-way-back" in page and 'href="/"' in page


@pytest.mark.parametrize("debug", [False, True])
def test_the_404_page_is_the_products_with_or_without_debug(client, settings, operator, debug):
    settings.DEBUG = debug
    client.force_login(operator)
    for url in ["/no-such-page/", "/connectors/no-such-connector/"]:
        response = client.get(url)
        page = response.content.decode()
        assert response.status_code == 404
        assert "Not found" in page and "data-way-back" in page and "URLconf" not in page and "healthz" not in page
    assert client.get("/connectors").status_code == 301  # a missing final slash is still added


def test_a_favicon_answers_at_the_address_browsers_try(client):
    response = client.get("/favicon.ico")
    assert response.status_code == 301 and response["Location"].endswith("favicon.svg")
