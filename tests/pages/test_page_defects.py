"""Defects outside the Logs tab and the list: compression, make run's address, password change, the 403
page, the API keys page, admin durations, range errors on the dashboards."""

import gzip
import io
import re
from datetime import UTC, datetime

import pytest
from django.core.management import call_command

from connectors.accounts.api_keys import create_api_key
from tests.conftest import PASSWORD
from tests.helpers.events import record

pytestmark = pytest.mark.django_db


def test_html_pages_are_gzipped_and_json_csv_and_new_key_pages_are_not(client, connector_admin, make_connector):
    connector = make_connector(name="Zipped")
    client.force_login(connector_admin)
    page = client.get("/connectors/", HTTP_ACCEPT_ENCODING="gzip, br")
    assert page["Content-Encoding"] == "gzip" and b"Zipped" in gzip.decompress(page.content)
    assert client.get("/connectors/").get("Content-Encoding") is None  # a client that did not offer gzip
    api = client.get("/api/actions/connectors", HTTP_ACCEPT_ENCODING="gzip")
    assert api.status_code == 200 and api.get("Content-Encoding") is None
    csv = client.get(f"/usage/connectors/{connector.pk}/events.csv", HTTP_ACCEPT_ENCODING="gzip")
    assert csv.get("Content-Encoding") is None
    shown = client.post("/account/api-keys/", {"name": "shown once"}, HTTP_ACCEPT_ENCODING="gzip")
    assert shown.get("Content-Encoding") is None and b"cak_" in shown.content  # BREACH: a secret is never compressed
    key = re.search(rb"data-new-api-key>(cak_[^<]+)<", shown.content).group(1)
    listed = client.get("/account/api-keys/", HTTP_ACCEPT_ENCODING="gzip")  # only the key's prefix from now on
    assert listed["Content-Encoding"] == "gzip" and key not in gzip.decompress(listed.content)


def test_ensure_admin_prints_the_address_it_was_given():
    out = io.StringIO()
    call_command("ensure_admin", "--url", "http://0.0.0.0:9000/", stdout=out)
    assert "Log in at http://0.0.0.0:9000/" in out.getvalue()


def test_a_user_changes_their_password_from_the_app(client, operator):
    client.force_login(operator)
    page = client.get("/connectors/").content.decode()
    assert 'href="/accounts/password_change/"' in page
    form = client.get("/accounts/password_change/").content.decode()
    assert 'href="/static/css/app.css"' in form and "Change your password" in form
    response = client.post("/accounts/password_change/", {
        "old_password": PASSWORD, "new_password1": "a much longer new passphrase 42", "new_password2": "a much longer new passphrase 42",
    }, follow=True)
    assert "Password changed" in response.content.decode()
    operator.refresh_from_db()
    assert operator.check_password("a much longer new passphrase 42")


def test_a_wrong_old_password_is_an_error_on_its_field(client, operator):
    client.force_login(operator)
    html = client.post("/accounts/password_change/", {
        "old_password": "nope", "new_password1": "x", "new_password2": "y"}).content.decode()
    assert 'id="id_old_password_error"' in html and "incorrectly" in html


@pytest.mark.parametrize(
    ("url", "permission", "role"),
    [("/connectors/", "connectors.view_connector", "Connector users"),
     ("/connectors/new/", "connectors.add_connector", "Connector admins"),
     ("/usage/", "usage.view_usage_dashboard", "Usage viewers")],
)
def test_the_403_page_names_the_permission_and_a_role_granting_it(client, outsider, url, permission, role):
    client.force_login(outsider)
    response = client.get(url)
    assert response.status_code == 403
    text = response.content.decode()
    assert permission in text and role in text


def test_the_api_keys_page_links_to_connectors_only_for_those_who_may_open_them(client, analyst, operator):
    client.force_login(analyst)
    assert 'href="/connectors/"' not in client.get("/account/api-keys/").content.decode()
    client.force_login(operator)
    assert 'href="/connectors/"' in client.get("/account/api-keys/").content.decode()


def test_the_api_keys_table_has_no_empty_header_and_revoking_asks_first(client, operator):
    create_api_key(operator, "ci")
    client.force_login(operator)
    html = client.get("/account/api-keys/").content.decode()
    assert "<th></th>" not in html and 'data-revoke' in html and "<button type=\"submit\" class=\"danger\">Revoke" not in html


def test_the_admin_event_list_rounds_durations(client, admin_user):
    record(datetime(2025, 3, 1, tzinfo=UTC), duration_ms=1.4409899999918707)
    client.force_login(admin_user)
    html = client.get("/admin/usage/executionevent/").content.decode()
    assert "1.4<" in html and "1.44098" not in html


@pytest.mark.parametrize("url", ["/usage/", "/usage/connectors/{id}/"])
def test_a_start_after_the_end_is_an_error_on_the_dashboards_range_form(client, analyst, make_connector, url):
    connector = make_connector(name="Ranged")
    client.force_login(analyst)
    response = client.get(url.format(id=connector.pk) + "?from=2025-03-02&to=2025-03-01")
    html = response.content.decode()
    assert response.status_code == 400
    form = re.search(r"<form[^>]*data-range-form.*?</form>", html, re.S).group(0)
    assert "the start must be before the end" in form and 'aria-describedby="range-error range-format"' in form
    assert 'value="2025-03-02"' in form  # what was typed stays in the field


def test_every_page_has_a_skip_link_and_marks_the_current_section(client, connector_admin):
    client.force_login(connector_admin)
    html = client.get("/connectors/").content.decode()
    assert '<a class="skip-link" href="#main">' in html and 'id="main"' in html
    assert re.search(r'<a href="/connectors/" aria-current="page">Connectors</a>', html)
    assert not re.search(r'<a href="/usage/" aria-current="page">', html)
