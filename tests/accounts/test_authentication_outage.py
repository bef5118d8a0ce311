"""Authentication while the database is away (README "Guarantees"): credentials this process has
cached keep working; credentials it has not (Basic, API keys, sessions) cannot be checked and get a 503 in the
endpoint's error shape, and a page (the login form) a readable 503 page; never a 500.

Against the app under uvicorn (tests/servers/asgi_server.py), with a real outage on PostgreSQL and SQLite's faithful
stand-in (tests/servers/database_outage.py).
"""

import json
import re

import httpx
import pytest
from django.conf import settings
from django.test import Client

from connectors.accounts.api_keys import create_api_key
from connectors.api import auth
from tests.conftest import PASSWORD, basic_auth
from tests.helpers.execute import execute_over_http, run_body
from tests.servers.database_outage import outage_for_a_test

HELLO = json.dumps({"messages": [{"role": "user", "content": "Hello"}]})
RUN = run_body({"messages": [{"role": "user", "content": "Hello"}]})


@pytest.fixture
def database_outage():
    yield from outage_for_a_test()


def chat(server, connector, headers):
    return httpx.post(f"{server.url}/api/openai/{connector.pk}/v1/chat/completions", content=HELLO,
                      headers={"Content-Type": "application/json", **headers}, timeout=30)


def assert_kibana_503(response):
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "5"
    assert response.json() == {"statusCode": 503, "error": "Service Unavailable",
                               "message": "The database is unavailable. Retry later."}


def assert_openai_503(response):
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "5"
    error = response.json()["error"]
    assert error["code"] == "database_unavailable" and error["type"] == "api_error"


def test_uncached_basic_credentials_get_a_503_on_every_api(asgi_live_server, operator, make_connector, fake_openai,
                                                          database_outage):
    connector = make_connector(api_url=fake_openai.url("ok"))
    database_outage.start()
    credentials = {"Authorization": basic_auth(operator)}

    assert_kibana_503(execute_over_http(asgi_live_server, connector, RUN, headers=credentials))
    assert_kibana_503(httpx.get(f"{asgi_live_server.url}/api/actions/connectors", headers=credentials, timeout=30))
    assert_openai_503(chat(asgi_live_server, connector, credentials))
    assert not fake_openai.requests


@pytest.mark.parametrize("scheme", ["ApiKey", "Bearer"])
def test_an_uncached_api_key_gets_a_503(asgi_live_server, operator, make_connector, fake_openai, database_outage,
                                        scheme):
    connector = make_connector(api_url=fake_openai.url("ok"))
    key = create_api_key(operator, "sdk")[1]
    database_outage.start()
    credentials = {"Authorization": f"{scheme} {key}"}

    assert_kibana_503(execute_over_http(asgi_live_server, connector, RUN, headers=credentials))
    assert_openai_503(chat(asgi_live_server, connector, credentials))
    assert not fake_openai.requests


def test_cached_basic_credentials_and_api_keys_keep_working(asgi_live_server, operator, make_connector, fake_openai,
                                                           database_outage):
    connector = make_connector(api_url=fake_openai.url("ok"))
    key = create_api_key(operator, "sdk")[1]
    basic, bearer = {"Authorization": basic_auth(operator)}, {"Authorization": f"Bearer {key}"}
    # Cache the credentials and the connector.
    assert execute_over_http(asgi_live_server, connector, RUN, headers=basic).json()["status"] == "ok"
    assert chat(asgi_live_server, connector, bearer).status_code == 200
    database_outage.start()
    auth._api_key_last_written.clear()  # as if a minute had passed: the key's "last used" is due to be written

    assert execute_over_http(asgi_live_server, connector, RUN, headers=basic).json()["status"] == "ok"
    assert execute_over_http(asgi_live_server, connector, RUN, headers=bearer).json()["status"] == "ok"
    assert chat(asgi_live_server, connector, bearer).status_code == 200
    assert len(fake_openai.requests) == 5


def test_a_cached_caller_whose_view_needs_the_database_gets_a_503(asgi_live_server, operator, database_outage):
    credentials = {"Authorization": basic_auth(operator)}
    assert httpx.get(f"{asgi_live_server.url}/api/actions/connectors", headers=credentials).status_code == 200
    database_outage.start()

    assert_kibana_503(httpx.get(f"{asgi_live_server.url}/api/actions/connectors", headers=credentials, timeout=30))


def test_a_session_gets_a_503_on_the_api(asgi_live_server, operator, database_outage):
    browser = Client()
    browser.force_login(operator)
    cookies = {settings.SESSION_COOKIE_NAME: browser.cookies[settings.SESSION_COOKIE_NAME].value}
    database_outage.start()

    response = httpx.get(f"{asgi_live_server.url}/api/actions/connectors", cookies=cookies, timeout=30)

    assert_kibana_503(response)


def test_a_login_during_an_outage_is_a_readable_503_page(asgi_live_server, operator, database_outage):
    with httpx.Client(base_url=asgi_live_server.url, timeout=30) as browser:
        form = browser.get("/accounts/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text).group(1)
        database_outage.start()

        response = browser.post("/accounts/login/", data={"username": operator.username, "password": PASSWORD,
                                                          "csrfmiddlewaretoken": token})

    assert response.status_code == 503 and response.headers["retry-after"] == "5"
    assert "The database is unavailable" in response.text and "<h1>" in response.text
