"""Against a real uvicorn: kbn-xsrf on writes with browser-held credentials,
framing and routing headers refused in ``config.headers``, ALLOWED_HOSTS on the API's short path, the
Content-Security-Policy, HSTS and the HTTPS redirect from settings, and a new API key never kept in the session."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from django.contrib.sessions.models import Session
from django.core.exceptions import ImproperlyConfigured

from connectors.accounts.api_keys import create_api_key
from connectors.models import Connector
from connectors.preconfigured import preconfigured_connectors
from tests.conftest import PASSWORD, basic_auth
from usage.models import ExecutionEvent

pytest_plugins = ["tests.servers.asgi_server"]

BASE_DIR = Path(__file__).resolve().parents[2]
CREATE = {"name": "Cross-site", "connector_type_id": ".gen-ai",
          "config": {"apiProvider": "OpenAI", "apiUrl": "https://api.openai.com/v1/chat/completions"},
          "secrets": {"apiKey": "sk-cross-site-0123456789"}}
RUN = {"params": {"subAction": "run", "subActionParams": {"body": json.dumps({"messages": [{"role": "user", "content": "hi"}]})}}}


# --- item 8: kbn-xsrf ----------------------------------------------------------------------------------------
def test_a_cross_site_basic_write_without_kbn_xsrf_is_refused_as_kibana_does(asgi_live_server, connector_admin):
    # What a page on another site can make a browser send with its cached Basic credentials: text/plain, no kbn-xsrf.
    response = httpx.post(f"{asgi_live_server.url}/api/actions/connector", content=json.dumps(CREATE), headers={
        "Authorization": basic_auth(connector_admin), "Content-Type": "text/plain", "Origin": "http://evil.example"})
    assert response.status_code == 400
    assert response.json() == {"statusCode": 400, "error": "Bad Request", "message": "Request must contain a kbn-xsrf header."}
    assert not Connector.objects.exists()


def test_a_cross_site_basic_execute_without_kbn_xsrf_is_refused(asgi_live_server, operator, make_connector, fake_openai):
    connector = make_connector(api_url=fake_openai.url("ok"))
    response = httpx.post(f"{asgi_live_server.url}/api/actions/connector/{connector.pk}/_execute", content=json.dumps(RUN),
                          headers={"Authorization": basic_auth(operator), "Content-Type": "text/plain"})
    assert response.status_code == 400 and "kbn-xsrf" in response.json()["message"]
    assert not fake_openai.requests and not ExecutionEvent.objects.exists()
    with_header = httpx.post(f"{asgi_live_server.url}/api/actions/connector/{connector.pk}/_execute", json=RUN,
                             headers={"Authorization": basic_auth(operator), "kbn-xsrf": "anything"})
    assert with_header.json()["status"] == "ok"


def test_kbn_xsrf_spelt_with_an_underscore_does_not_count(asgi_live_server, connector_admin):
    # Django drops a header whose name has an underscore (it would read as the hyphenated one): the guard, which
    # reads request.META, must not see kbn_xsrf as kbn-xsrf.
    response = httpx.post(f"{asgi_live_server.url}/api/actions/connector", content=json.dumps(CREATE), headers={
        "Authorization": basic_auth(connector_admin), "Content-Type": "text/plain", "kbn_xsrf": "x", "kbn_version": "x"})
    assert response.status_code == 400 and response.json()["message"] == "Request must contain a kbn-xsrf header."
    assert not Connector.objects.exists()


@pytest.mark.parametrize("scheme", ["ApiKey", "Bearer"])
def test_api_key_callers_need_no_kbn_xsrf(asgi_live_server, connector_admin, scheme):
    key = create_api_key(connector_admin, "script")[1]
    response = httpx.post(f"{asgi_live_server.url}/api/actions/connector", json=CREATE,
                          headers={"Authorization": f"{scheme} {key}"})
    assert response.status_code == 200


def test_reads_need_no_kbn_xsrf(asgi_live_server, analyst, operator, make_connector):
    connector = make_connector()
    usage = httpx.get(f"{asgi_live_server.url}/api/usage/connectors/{connector.pk}", headers={"Authorization": basic_auth(analyst)})
    listing = httpx.get(f"{asgi_live_server.url}/api/actions/connectors", headers={"Authorization": basic_auth(operator)})
    assert usage.status_code == 200 and listing.status_code == 200


def test_a_session_write_needs_kbn_xsrf_besides_the_csrf_token(client, connector_admin):
    from django.test import Client

    browser = Client(enforce_csrf_checks=True)
    browser.force_login(connector_admin)
    browser.get("/connectors/")
    token = browser.cookies["csrftoken"].value
    refused = browser.post("/api/actions/connector", json.dumps(CREATE), content_type="application/json",
                           HTTP_X_CSRFTOKEN=token)
    assert refused.status_code == 400 and refused.json()["message"] == "Request must contain a kbn-xsrf header."


def test_openai_endpoint_with_basic_needs_a_json_content_type_or_kbn_xsrf(asgi_live_server, recorded_events, operator,
                                                                          make_connector, fake_openai):
    connector = make_connector(api_url=fake_openai.url("ok"))
    url = f"{asgi_live_server.url}/api/openai/{connector.pk}/v1/chat/completions"
    body = json.dumps({"messages": [{"role": "user", "content": "hi"}]})
    cross_site = httpx.post(url, content=body, headers={"Authorization": basic_auth(operator), "Content-Type": "text/plain"})
    assert cross_site.status_code == 400 and cross_site.json()["error"]["code"] == "xsrf_protection"
    assert not fake_openai.requests
    as_json = httpx.post(url, content=body, headers={"Authorization": basic_auth(operator), "Content-Type": "application/json"})
    assert as_json.status_code == 200
    key = create_api_key(operator, "sdk")[1]
    bearer = httpx.post(url, content=body, headers={"Authorization": f"Bearer {key}", "Content-Type": "text/plain"})
    assert bearer.status_code == 200
    recorded_events.wait_for(2)


# --- item 9: config.headers ---------------------------------------------------------------------------------
FORBIDDEN = ["Host", "Content-Length", "Transfer-Encoding", "Connection", "Expect", "Upgrade", "TE", "Trailer",
             "Keep-Alive", "Proxy-Authorization", "Proxy-Connection", "proxy-anything"]


@pytest.mark.parametrize("name", FORBIDDEN)
def test_framing_and_routing_headers_are_refused_by_the_api(client, connector_admin, name):
    body = {**CREATE, "config": {**CREATE["config"], "headers": {name: "x"}}}
    response = client.post("/api/actions/connector", json.dumps(body), content_type="application/json",
                           HTTP_KBN_XSRF="true", HTTP_AUTHORIZATION=basic_auth(connector_admin))
    assert response.status_code == 400
    message = response.json()["message"]
    assert message.startswith("error validating action type config: [headers]: The header ") and name in message
    assert not Connector.objects.exists()


@pytest.mark.parametrize("headers, named", [
    ({"X-Team": "a\x01b"}, "X-Team"), ({"X-Team": "a\x7f"}, "X-Team"), ({"X-Team": "a\nInjected: 1"}, "X-Team"),
    ({"X-Team": "caf\u00e9"}, "X-Team"), ({"Bad Name": "x"}, "Bad Name"), ({"X-\x00": "x"}, "X-\\x00"),
])
def test_control_characters_and_invalid_names_are_refused_by_the_api(client, connector_admin, headers, named):
    body = {**CREATE, "config": {**CREATE["config"], "headers": headers}}
    response = client.post("/api/actions/connector", json.dumps(body), content_type="application/json",
                           HTTP_KBN_XSRF="true", HTTP_AUTHORIZATION=basic_auth(connector_admin))
    assert response.status_code == 400 and "config: [headers]" in response.json()["message"]
    assert named in response.json()["message"]
    assert not Connector.objects.exists()


def test_an_update_cannot_add_a_host_header(client, connector_admin, make_connector):
    connector = make_connector()
    body = {"name": "x", "config": {**CREATE["config"], "headers": {"Host": "internal.example"}}}
    response = client.put(f"/api/actions/connector/{connector.pk}", json.dumps(body), content_type="application/json",
                          HTTP_KBN_XSRF="true", HTTP_AUTHORIZATION=basic_auth(connector_admin))
    assert response.status_code == 400 and "The header Host cannot be set" in response.json()["message"]
    connector.refresh_from_db()
    assert connector.headers == {}


def test_the_form_refuses_a_content_length_header(client, connector_admin):
    client.force_login(connector_admin)
    response = client.post("/connectors/new/", {"name": "Form", "provider": "OpenAI", "api_url": CREATE["config"]["apiUrl"],
                                                "api_key": "sk-form-0123456789", "headers": "Content-Length: 0"})
    assert response.status_code == 200
    assert "The header Content-Length cannot be set" in response.content.decode()
    assert not Connector.objects.exists()


def test_a_preconfigured_connector_with_an_expect_header_stops_start_up(actions_config):
    actions_config({"preconfigured": {"hangs": {
        "name": "Hangs", "actionTypeId": ".gen-ai",
        "config": {"apiProvider": "OpenAI", "apiUrl": "https://api.openai.com/v1/chat/completions",
                   "headers": {"Expect": "100-continue"}},
        "secrets": {"apiKey": "sk-pre-0123456789"}}}})
    with pytest.raises(ImproperlyConfigured, match=r"preconfigured\.hangs: headers: The header Expect cannot be set"):
        preconfigured_connectors()


def test_a_connector_stored_before_the_rule_does_not_send_its_framing_headers(admin_user, fake_openai):
    from connectors.outbound.providers import build_headers

    connector = Connector(name="Old", provider="Other", api_url=fake_openai.url("ok"), default_model="m",
                          headers={"Host": "internal.example", "Content-Length": "0", "X-Team": "search"},
                          created_by=admin_user)
    connector.save()  # without full_clean: as stored by an older version
    assert build_headers(connector) == {"X-Team": "search", "Content-Type": "application/json"}


# --- item 10: hosts, CSP, HSTS, SSL redirect, API key -----------------------------------------------------------
def test_the_api_short_path_checks_allowed_hosts(asgi_live_server, operator):
    headers = {"Authorization": basic_auth(operator)}
    refused = httpx.get(f"{asgi_live_server.url}/api/actions/connectors", headers={**headers, "Host": "evil.example"})
    assert refused.status_code == 400
    allowed = httpx.get(f"{asgi_live_server.url}/api/actions/connectors", headers=headers)
    assert allowed.status_code == 200


def test_pages_and_the_api_send_a_content_security_policy(asgi_live_server, operator):
    page = httpx.get(f"{asgi_live_server.url}/accounts/login/")
    api = httpx.get(f"{asgi_live_server.url}/api/actions/connectors", headers={"Authorization": basic_auth(operator)})
    for response in (page, api):
        policy = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy and "unsafe-inline" not in policy


@pytest.fixture
def reload_middleware():
    """SecurityMiddleware reads its settings when the server loads it (once per process, in production at start-up):
    rebuild both stacks after changing them, and again at the end."""
    from connectors_admin import asgi

    def reload():
        asgi.api_application.load_middleware()
        asgi.django_application.load_middleware(is_async=True)

    yield reload
    reload()


def test_hsts_and_the_https_redirect_follow_the_settings_on_both_stacks(asgi_live_server, operator, reload_middleware,
                                                                       settings):
    # reload_middleware before settings: its final reload runs after the settings are restored.
    settings.SECURE_HSTS_SECONDS = 31536000
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    settings.SECURE_HSTS_PRELOAD = True
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    reload_middleware()
    api = f"{asgi_live_server.url}/api/actions/connectors"
    headers = {"Authorization": basic_auth(operator), "X-Forwarded-Proto": "https"}
    for response in (httpx.get(api, headers=headers), httpx.get(f"{asgi_live_server.url}/accounts/login/", headers=headers)):
        assert response.headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains; preload"
    settings.SECURE_SSL_REDIRECT = True
    reload_middleware()
    plain = httpx.get(api, headers={"Authorization": basic_auth(operator)})
    assert plain.status_code == 301 and plain.headers["Location"].startswith("https://")


def test_check_deploy_is_clean_with_production_settings(tmp_path):
    environment = {
        **os.environ, "ENV_FILE": "", "DEBUG": "false", "SECRET_KEY": "x7!Kq2#vLp9@rZ4$mN8&wT1^bY6*cH3(jF5)gD0-sAe8Ru3Wm6Qz1Xc4Vb7Nn0Ll2Kk5",
        "CONNECTORS_ENCRYPTION_KEYS": "n3lWvZK5s2R1O8Vd4y5Cs0bWcxy3z2Ikyxdn8wR1kqE=", "ALLOWED_HOSTS": "connectors.example.com",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'deploy.sqlite3'}", "SECURE_COOKIES": "true", "SECURE_SSL_REDIRECT": "true",
        "SECURE_HSTS_SECONDS": "31536000", "SECURE_HSTS_INCLUDE_SUBDOMAINS": "true", "SECURE_HSTS_PRELOAD": "true",
        "SECURE_PROXY_SSL_HEADER": "true",
    }
    result = subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"], cwd=BASE_DIR,
                            env=environment, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_a_new_api_key_is_shown_once_and_never_stored_in_the_session(client, operator):
    client.force_login(operator)
    response = client.post("/account/api-keys/", {"name": "ci"})
    assert response.status_code == 200
    page = response.content.decode()
    start = page.index("data-new-api-key>") + len("data-new-api-key>")
    plaintext = page[start:page.index("<", start)].strip()
    assert plaintext.startswith("cak_")
    assert "no-store" in response["Cache-Control"]
    for session in Session.objects.all():
        assert plaintext not in json.dumps(session.get_decoded())
    assert plaintext not in client.get("/account/api-keys/").content.decode()


def test_login_page_still_logs_in(client, operator):
    response = client.post("/accounts/login/", {"username": operator.username, "password": PASSWORD})
    assert response.status_code == 302


def test_the_api_short_path_sends_a_content_length_as_the_full_stack_does(asgi_live_server, operator, connector_admin,
                                                                         make_connector):
    connector = make_connector()
    headers = {"Authorization": basic_auth(operator)}
    for path in (f"/api/actions/connector/{connector.pk}", "/api/actions/connectors", "/api/actions/connector/none"):
        response = httpx.get(f"{asgi_live_server.url}{path}", headers=headers)
        assert response.status_code in (200, 404)
        assert int(response.headers["content-length"]) == len(response.content) > 0
        assert "transfer-encoding" not in response.headers  # not chunked
    deleted = httpx.delete(f"{asgi_live_server.url}/api/actions/connector/{connector.pk}",
                           headers={"Authorization": basic_auth(connector_admin), "kbn-xsrf": "true"})
    assert deleted.status_code == 204
    assert "content-length" not in deleted.headers  # RFC 9110: none on a 204, as Kibana sends none
