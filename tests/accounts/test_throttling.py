"""wrong Basic passwords no longer stall other callers, and failed logins are throttled.

The password hasher is gated (``GatedMD5Hasher`` blocks until the test lets it go), so "a caller is served while a
password check is in progress" is shown by the order of events, not by timing: on the old code the gated check
held asgiref's shared thread and the other caller could not be served at all. The throttle counts attempts in the
database, so the limits are exact and the tests count requests, never time.
"""

from __future__ import annotations

import ipaddress
import logging
import threading

import httpx
import pytest
from django.contrib.auth.hashers import MD5PasswordHasher

from connectors.accounts.api_keys import create_api_key
from connectors.api import auth
from connectors.throttling.failures import forget_locks
from connectors.throttling.models import AuthFailureWindow
from tests.conftest import PASSWORD, basic_auth

pytest_plugins = ["tests.servers.asgi_server"]

WRONG = "not-the-password"


class GatedMD5Hasher(MD5PasswordHasher):
    """The tests' MD5 hasher, which, while ``closed`` is set, waits in ``verify`` until the test opens the gate."""

    closed = threading.Event()
    opened = threading.Event()
    entered = threading.Event()

    def verify(self, password, encoded):
        if self.closed.is_set():
            self.entered.set()
            self.opened.wait(30)
        return super().verify(password, encoded)


@pytest.fixture
def gated_hasher(settings):
    settings.PASSWORD_HASHERS = ["tests.accounts.test_throttling.GatedMD5Hasher"]
    GatedMD5Hasher.opened.clear()
    GatedMD5Hasher.entered.clear()
    GatedMD5Hasher.closed.set()
    yield GatedMD5Hasher
    GatedMD5Hasher.closed.clear()
    GatedMD5Hasher.opened.set()


def in_background(function):
    result: list = []
    thread = threading.Thread(target=lambda: result.append(function()), daemon=True)
    thread.start()
    return thread, result


def get_connectors(server, authorization: str, headers: dict | None = None, **kwargs) -> httpx.Response:
    return httpx.get(f"{server.url}/api/actions/connectors", headers={"Authorization": authorization, **(headers or {})},
                     **kwargs)


def test_a_password_check_in_progress_does_not_hold_up_other_callers(asgi_live_server, operator, connector_admin,
                                                                     gated_hasher):
    key = create_api_key(connector_admin, "script")[1]  # not cached yet: its lookup needs asgiref's shared thread
    thread, result = in_background(lambda: get_connectors(asgi_live_server, basic_auth(operator, WRONG), timeout=60))
    try:
        assert gated_hasher.entered.wait(30), "the wrong password never reached the hasher"
        # The check is held in the hasher; on the old code it held the shared thread, and this call waited for it.
        other = get_connectors(asgi_live_server, f"ApiKey {key}", timeout=20)
        assert other.status_code == 200
    finally:
        gated_hasher.opened.set()
        thread.join(30)
    assert result[0].status_code == 401


def test_password_checks_beyond_the_queue_are_refused_at_once(asgi_live_server, operator, connector_admin, gated_hasher,
                                                              settings):
    settings.AUTH_HASHER_QUEUE = 1
    thread, result = in_background(lambda: get_connectors(asgi_live_server, basic_auth(operator, WRONG), timeout=60))
    try:
        assert gated_hasher.entered.wait(30)
        refused = get_connectors(asgi_live_server, basic_auth(connector_admin), timeout=20)
        assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"
        assert refused.json()["message"] == "Too many password checks in progress. Try again in a second."
    finally:
        gated_hasher.opened.set()
        thread.join(30)
    assert result[0].status_code == 401
    assert get_connectors(asgi_live_server, basic_auth(connector_admin)).status_code == 200


def test_failed_basic_logins_are_throttled_per_username(asgi_live_server, operator, settings, caplog):
    settings.AUTH_THROTTLE_FAILURES_PER_USERNAME = 3
    caplog.set_level(logging.INFO, logger="connectors.throttling")
    assert get_connectors(asgi_live_server, basic_auth(operator)).status_code == 200  # now cached
    for _attempt in range(3):
        assert get_connectors(asgi_live_server, basic_auth(operator, WRONG)).status_code == 401
    refused = get_connectors(asgi_live_server, basic_auth(operator, WRONG))
    assert refused.status_code == 429
    body = refused.json()
    assert body["statusCode"] == 429 and body["error"] == "Too Many Requests"
    assert body["message"].startswith("Too many failed login attempts for this username. Try again in ")
    assert 1 <= int(refused.headers["Retry-After"]) <= settings.AUTH_THROTTLE_WINDOW_SECONDS
    # A caller whose credentials are cached is not affected...
    assert get_connectors(asgi_live_server, basic_auth(operator)).status_code == 200
    # ...but once they have to be checked again, even the right password waits for the window to end.
    auth.forget_all()
    assert get_connectors(asgi_live_server, basic_auth(operator)).status_code == 429
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "authentication throttled" in logged and "'olivia'" in logged
    assert WRONG not in logged and PASSWORD not in logged


def test_failed_basic_logins_are_throttled_per_address(asgi_live_server, settings):
    settings.AUTH_THROTTLE_FAILURES_PER_ADDRESS = 3
    for name in ("mallory", "trudy", "eve"):
        assert get_connectors(asgi_live_server, basic_auth(name, WRONG)).status_code == 401
    refused = get_connectors(asgi_live_server, basic_auth("oscar", WRONG))
    assert refused.status_code == 429 and "for this address" in refused.json()["message"]
    assert AuthFailureWindow.objects.get(bucket="address:127.0.0.1").failures == 4
    # Further refusals come from the process's memory of the lock, without a database write each.
    again = get_connectors(asgi_live_server, basic_auth("oscar", WRONG))
    assert again.status_code == 429 and "for this address" in again.json()["message"]
    assert AuthFailureWindow.objects.get(bucket="address:127.0.0.1").failures == 4


def test_behind_a_trusted_proxy_the_forwarded_client_is_throttled_not_the_proxy(asgi_live_server, settings):
    """The throttle keys on the same client address as the audit trail (connectors/client_address.py): behind a
    proxy listed in TRUSTED_PROXIES, one client's failures do not lock out the others the proxy forwards."""
    settings.AUTH_THROTTLE_FAILURES_PER_ADDRESS = 3
    settings.TRUSTED_PROXIES = [ipaddress.ip_network("127.0.0.1/32")]
    attacker = {"X-Forwarded-For": "203.0.113.5"}
    for name in ("mallory", "trudy", "eve"):
        assert get_connectors(asgi_live_server, basic_auth(name, WRONG), attacker).status_code == 401
    assert get_connectors(asgi_live_server, basic_auth("oscar", WRONG), attacker).status_code == 429
    # A forged left part of the header changes nothing: the right-most untrusted address counts.
    forged = {"X-Forwarded-For": "198.51.100.99, 203.0.113.5"}
    assert get_connectors(asgi_live_server, basic_auth("oscar", WRONG), forged).status_code == 429
    other = {"X-Forwarded-For": "198.51.100.7"}
    assert get_connectors(asgi_live_server, basic_auth("walter", WRONG), other).status_code == 401
    assert AuthFailureWindow.objects.filter(bucket="address:127.0.0.1").count() == 0
    assert AuthFailureWindow.objects.get(bucket="address:203.0.113.5").failures == 4


def test_the_openai_endpoint_answers_a_throttled_caller_in_openais_shape(asgi_live_server, operator, make_connector,
                                                                         settings):
    settings.AUTH_THROTTLE_FAILURES_PER_USERNAME = 1
    connector = make_connector()
    url = f"{asgi_live_server.url}/api/openai/{connector.pk}/v1/models"
    assert httpx.get(url, headers={"Authorization": basic_auth(operator, WRONG)}).status_code == 401
    refused = httpx.get(url, headers={"Authorization": basic_auth(operator, WRONG)})
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"


def test_a_success_clears_the_usernames_count(asgi_live_server, operator, settings):
    settings.AUTH_THROTTLE_FAILURES_PER_USERNAME = 3
    for _attempt in range(2):
        assert get_connectors(asgi_live_server, basic_auth(operator, WRONG)).status_code == 401
    assert get_connectors(asgi_live_server, basic_auth(operator)).status_code == 200
    for _attempt in range(3):
        assert get_connectors(asgi_live_server, basic_auth(operator, WRONG)).status_code == 401


def test_the_login_page_is_throttled_and_shares_the_count_with_basic(client, operator, settings):
    settings.AUTH_THROTTLE_FAILURES_PER_USERNAME = 2
    assert client.post("/accounts/login/", {"username": "olivia", "password": WRONG}).status_code == 200
    assert client.post("/accounts/login/", {"username": "olivia", "password": WRONG}).status_code == 200
    refused = client.post("/accounts/login/", {"username": "olivia", "password": PASSWORD})
    assert refused.status_code == 429 and int(refused["Retry-After"]) >= 1
    assert "Too many failed login attempts for this username" in refused.content.decode()
    assert "_auth_user_id" not in client.session
    # The count is in the database, shared by every process and by the API's Basic authentication: forgotten here
    # what this process knows of the lock, as another process would not know it either.
    forget_locks()
    basic = client.get("/api/actions/connectors", HTTP_AUTHORIZATION=basic_auth(operator))
    assert basic.status_code == 429


def test_the_admin_login_goes_through_the_throttled_page(client):
    response = client.get("/admin/login/?next=/admin/")
    assert response.status_code == 302 and response["Location"] == "/accounts/login/?next=/admin/"
