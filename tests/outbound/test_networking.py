"""The networking settings of ACTIONS_CONFIG on real sockets: TLS with a CA made here, a real forward proxy
(proxy.py), and allowedHosts at create, update, execute and on redirects (docs/KIBANA.md, 'Networking settings')."""

from urllib.parse import quote

import pytest
from django.urls import reverse

from connectors.models import Connector
from tests.conftest import basic_auth
from tests.helpers.outbound import SECRET, assert_recorded_once, closed_port, run
from tests.servers.fake_openai import FakeOpenAI
from tests.servers.forward_proxy import ForwardProxy
from tests.servers.tls import CertificateAuthority

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("debug_logs")]

NOT_ALLOWED = "is not in the allowedHosts networking setting"


# --- servers ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    return CertificateAuthority(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def tls_server(ca):
    """An OpenAI-shaped server on https://127.0.0.1, its certificate (for 127.0.0.1 and localhost) from ``ca``."""
    server = FakeOpenAI(ssl_context=ca.issue("127.0.0.1", "localhost", stem="loopback").server_context()).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def misnamed_tls_server(ca):
    """A server whose certificate is signed by ``ca`` but names another host."""
    server = FakeOpenAI(ssl_context=ca.issue("api.elsewhere.example", stem="misnamed").server_context()).start()
    yield server
    server.stop()


@pytest.fixture
def tls(tls_server):
    tls_server.clear()
    return tls_server


@pytest.fixture(scope="module")
def forward_proxy(tmp_path_factory):
    proxy = ForwardProxy(tmp_path_factory.mktemp("proxy") / "requests.jsonl").start()
    yield proxy
    proxy.stop()


@pytest.fixture
def proxy(forward_proxy):
    forward_proxy.clear()
    return forward_proxy


def host_entry(server, **ssl):
    return {"url": server.base_url, "ssl": ssl}


def tunnels(proxy):
    return [(r["host"], r["port"]) for r in proxy.seen() if r["method"] == "CONNECT"]


def forwarded(proxy):
    return [(r["method"], r["host"], r["port"], r["path"]) for r in proxy.seen() if r["method"] != "CONNECT"]


# --- TLS ---------------------------------------------------------------------------------------------------------

def test_a_certificate_from_an_unknown_ca_is_rejected(make_connector, tls, caplog):
    execution = run(make_connector(api_url=tls.url("ok"), api_key=SECRET))
    message = execution.envelope["service_message"]
    # Kibana's "Unexpected API Error: <code> - <message>" with Node's code for this failure, and
    # retry true as for every error thrown while running.
    assert message.startswith("Status code: undefined. Message: Unexpected API Error: UNABLE_TO_GET_ISSUER_CERT_LOCALLY"
                              f" - TLS connection to 127.0.0.1:{tls.port} failed: ")
    assert "unable to get local issuer certificate" in message
    assert execution.envelope["retry"] is True
    assert not tls.requests
    assert_recorded_once(execution, caplog, outcome="failure")


def test_custom_host_settings_trust_a_ca_file(make_connector, tls, ca, actions_config, caplog):
    actions_config({"customHostSettings": [host_entry(tls, certificateAuthoritiesFiles=[str(ca.cert_file)])]})
    execution = run(make_connector(api_url=tls.url("ok"), api_key=SECRET))
    assert execution.envelope["status"] == "ok", execution.envelope
    assert tls.requests[0].headers["authorization"] == f"Bearer {SECRET}"
    assert_recorded_once(execution, caplog, outcome="success")


def test_custom_host_settings_trust_inline_pem_data(make_connector, tls, ca, actions_config, caplog):
    actions_config({"customHostSettings": [host_entry(tls, certificateAuthoritiesData=ca.pem)]})
    execution = run(make_connector(api_url=tls.url("ok"), api_key=SECRET))
    assert execution.envelope["status"] == "ok", execution.envelope
    assert_recorded_once(execution, caplog, outcome="success")


def test_custom_host_settings_match_on_the_port(make_connector, tls, ca, actions_config, caplog):
    other_port = {"url": f"https://127.0.0.1:{closed_port()}", "ssl": {"certificateAuthoritiesData": ca.pem}}
    actions_config({"customHostSettings": [other_port]})
    execution = run(make_connector(api_url=tls.url("ok"), api_key=SECRET))
    assert "unable to get local issuer certificate" in execution.envelope["service_message"]
    assert_recorded_once(execution, caplog, outcome="failure")


def test_custom_host_settings_match_on_the_host_name(make_connector, tls, ca, actions_config, caplog):
    actions_config({"customHostSettings": [{"url": f"https://localhost:{tls.port}", "ssl": {"certificateAuthoritiesData": ca.pem}}]})
    by_name = run(make_connector(api_url=f"https://localhost:{tls.port}/ok/v1/chat/completions", api_key=SECRET))
    assert by_name.envelope["status"] == "ok", by_name.envelope
    by_address = run(make_connector(api_url=tls.url("ok"), api_key=SECRET))
    assert by_address.envelope["status"] == "error"


def test_global_verification_mode_none_accepts_an_untrusted_certificate(make_connector, tls, actions_config, caplog):
    actions_config({"ssl": {"verificationMode": "none"}})
    execution = run(make_connector(api_url=tls.url("ok"), api_key=SECRET))
    assert execution.envelope["status"] == "ok", execution.envelope
    assert_recorded_once(execution, caplog, outcome="success")


def test_per_host_verification_mode_none_accepts_an_untrusted_certificate(make_connector, tls, actions_config, caplog):
    actions_config({"customHostSettings": [host_entry(tls, verificationMode="none")]})
    execution = run(make_connector(api_url=tls.url("ok"), api_key=SECRET))
    assert execution.envelope["status"] == "ok", execution.envelope
    assert_recorded_once(execution, caplog, outcome="success")


def test_per_host_settings_override_the_global_verification_mode(make_connector, tls, actions_config, caplog):
    actions_config({"ssl": {"verificationMode": "none"}, "customHostSettings": [host_entry(tls, verificationMode="full")]})
    execution = run(make_connector(api_url=tls.url("ok"), api_key=SECRET))
    assert "unable to get local issuer certificate" in execution.envelope["service_message"]
    assert_recorded_once(execution, caplog, outcome="failure")


def test_full_verification_rejects_a_certificate_for_another_host(make_connector, misnamed_tls_server, ca,
                                                                  actions_config, caplog):
    server = misnamed_tls_server
    actions_config({"customHostSettings": [host_entry(server, certificateAuthoritiesData=ca.pem)]})
    execution = run(make_connector(api_url=server.url("ok"), api_key=SECRET))
    message = execution.envelope["service_message"]
    assert message.startswith("Status code: undefined. Message: Unexpected API Error: ERR_TLS_CERT_ALTNAME_INVALID - "
                              f"TLS connection to 127.0.0.1:{server.port} failed: ")
    assert message.endswith("mismatch, certificate is not valid for '127.0.0.1'.")
    assert_recorded_once(execution, caplog, outcome="failure")


def test_certificate_mode_accepts_a_trusted_chain_for_another_host(make_connector, misnamed_tls_server, ca,
                                                                   actions_config, caplog):
    server = misnamed_tls_server
    actions_config({"customHostSettings": [host_entry(server, verificationMode="certificate", certificateAuthoritiesData=ca.pem)]})
    execution = run(make_connector(api_url=server.url("ok"), api_key=SECRET))
    assert execution.envelope["status"] == "ok", execution.envelope
    assert_recorded_once(execution, caplog, outcome="success")


def test_a_host_entry_without_its_own_mode_means_full_not_the_global_mode(make_connector, misnamed_tls_server, ca,
                                                                         actions_config, caplog):
    # Kibana's axios_utils recomputes the entry's
    # rejectUnauthorized from its own verificationMode, absent = full (docs/KIBANA.md 6.1).
    server = misnamed_tls_server
    actions_config({"ssl": {"verificationMode": "certificate"},
                    "customHostSettings": [host_entry(server, certificateAuthoritiesData=ca.pem)]})
    execution = run(make_connector(api_url=server.url("ok"), api_key=SECRET))
    assert execution.envelope["status"] == "error"
    assert execution.envelope["service_message"].endswith("mismatch, certificate is not valid for '127.0.0.1'.")
    assert_recorded_once(execution, caplog, outcome="failure")


def test_custom_host_cas_replace_the_default_trust_store_as_in_kibana(make_connector, tls, ca, actions_config,
                                                                      monkeypatch, tmp_path, caplog):
    # The default trust store (certifi's bundle) is made to hold the test CA, so the server is trusted by default;
    # an entry listing another CA must then *replace* that store for the host (Node's `ca` option, docs/KIBANA.md
    # 6.1), and the server's certificate is no longer trusted there.
    from connectors.outbound import transport

    monkeypatch.setattr(transport.certifi, "where", lambda: str(ca.cert_file))
    transport.ssl_context_for.cache_clear()
    other_ca = CertificateAuthority(tmp_path, common_name="Another test CA")
    actions_config({})
    trusted = run(make_connector(api_url=tls.url("ok"), api_key=SECRET))
    assert trusted.envelope["status"] == "ok", trusted.envelope
    Connector.objects.all().delete()
    from usage.models import ExecutionEvent

    ExecutionEvent.objects.all().delete()
    actions_config({"customHostSettings": [host_entry(tls, certificateAuthoritiesData=other_ca.pem)]})
    replaced = run(make_connector(api_url=tls.url("ok"), api_key=SECRET))
    transport.ssl_context_for.cache_clear()
    assert "unable to get local issuer certificate" in replaced.envelope["service_message"], replaced.envelope
    assert_recorded_once(replaced, caplog, outcome="failure")


def test_certificate_mode_still_checks_the_chain(make_connector, misnamed_tls_server, actions_config, caplog):
    actions_config({"ssl": {"verificationMode": "certificate"}})
    execution = run(make_connector(api_url=misnamed_tls_server.url("ok"), api_key=SECRET))
    assert "unable to get local issuer certificate" in execution.envelope["service_message"]
    assert_recorded_once(execution, caplog, outcome="failure")


# --- proxy -------------------------------------------------------------------------------------------------------

def test_http_requests_go_through_the_proxy_with_its_headers(make_connector, fake_openai, proxy, actions_config, caplog):
    actions_config({"proxyUrl": proxy.url, "proxyHeaders": {"X-Proxy-Token": "t0ken", "X-Tenant": "search"}})
    execution = run(make_connector(api_url=fake_openai.url("ok"), api_key=SECRET))
    assert execution.envelope["status"] == "ok", execution.envelope
    assert forwarded(proxy) == [("POST", "127.0.0.1", fake_openai.port, "/ok/v1/chat/completions")]
    headers = proxy.seen()[0]["headers"]
    assert headers["x-proxy-token"] == "t0ken" and headers["x-tenant"] == "search"
    assert fake_openai.requests[0].headers["authorization"] == f"Bearer {SECRET}"
    assert_recorded_once(execution, caplog, outcome="success")


def test_proxy_url_credentials_reach_the_proxy_as_proxy_authorization(make_connector, fake_openai, proxy,
                                                                      actions_config):
    actions_config({"proxyUrl": proxy.url.replace("http://", "http://relay:s3cret@")})
    assert run(make_connector(api_url=fake_openai.url("ok"))).envelope["status"] == "ok"
    assert proxy.seen()[0]["headers"]["proxy-authorization"] == "Basic cmVsYXk6czNjcmV0"


def test_https_requests_tunnel_through_the_proxy_with_connect(make_connector, tls, ca, proxy, actions_config, caplog):
    actions_config({
        "proxyUrl": proxy.url,
        "proxyHeaders": {"X-Proxy-Token": "t0ken"},
        "customHostSettings": [host_entry(tls, certificateAuthoritiesData=ca.pem)],
    })
    execution = run(make_connector(api_url=tls.url("ok"), api_key=SECRET))
    assert execution.envelope["status"] == "ok", execution.envelope
    assert tunnels(proxy) == [("127.0.0.1", tls.port)] and not forwarded(proxy)
    connect = proxy.seen()[0]
    assert connect["headers"]["x-proxy-token"] == "t0ken"
    # The key travels inside the tunnel only: the proxy never sees it.
    assert "authorization" not in connect["headers"] and SECRET not in str(connect)
    assert tls.requests[0].headers["authorization"] == f"Bearer {SECRET}"
    assert_recorded_once(execution, caplog, outcome="success")


def test_proxy_bypass_hosts_go_direct(make_connector, fake_openai, proxy, actions_config):
    actions_config({"proxyUrl": proxy.url, "proxyBypassHosts": ["127.0.0.1"]})
    direct = run(make_connector(api_url=fake_openai.url("ok")))
    assert direct.envelope["status"] == "ok" and proxy.seen() == []
    proxied = run(make_connector(api_url=f"http://localhost:{fake_openai.port}/ok/v1/chat/completions"))
    assert proxied.envelope["status"] == "ok"
    assert [(host, port) for _m, host, port, _p in forwarded(proxy)] == [("localhost", fake_openai.port)]
    assert len(fake_openai.requests) == 2


def test_proxy_only_hosts_limit_the_proxy_to_those_hosts(make_connector, fake_openai, proxy, actions_config):
    actions_config({"proxyUrl": proxy.url, "proxyOnlyHosts": ["localhost"]})
    direct = run(make_connector(api_url=fake_openai.url("ok")))
    assert direct.envelope["status"] == "ok" and proxy.seen() == []
    proxied = run(make_connector(api_url=f"http://localhost:{fake_openai.port}/ok/v1/chat/completions"))
    assert proxied.envelope["status"] == "ok"
    assert [(host, port) for _m, host, port, _p in forwarded(proxy)] == [("localhost", fake_openai.port)]


def test_without_proxy_url_nothing_goes_through_the_proxy_whatever_the_environment(make_connector, fake_openai, proxy,
                                                                                    monkeypatch):
    # Only ACTIONS_CONFIG decides: HTTP_PROXY & co. would otherwise silently reroute (or leak) the calls.
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
        monkeypatch.setenv(name, proxy.url)
    assert run(make_connector(api_url=fake_openai.url("ok"))).envelope["status"] == "ok"
    assert proxy.seen() == [] and len(fake_openai.requests) == 1


def test_an_unreachable_proxy_is_named_in_the_error(make_connector, fake_openai, actions_config, caplog):
    proxy_port = closed_port()
    actions_config({"proxyUrl": f"http://user:proxy-pass@127.0.0.1:{proxy_port}"})
    execution = run(make_connector(api_url=fake_openai.url("ok"), api_key=SECRET))
    message = execution.envelope["service_message"]
    assert f"through the proxy 127.0.0.1:{proxy_port}" in message
    assert "proxy-pass" not in message and execution.envelope["retry"] is True
    assert not fake_openai.requests
    assert_recorded_once(execution, caplog, outcome="failure")


@pytest.fixture(scope="module")
def tls_proxy(tmp_path_factory, ca):
    """proxy.py listening with TLS, its certificate from the test CA (which the client does not trust)."""
    certificate = ca.issue("127.0.0.1", stem="proxy")
    proxy = ForwardProxy(tmp_path_factory.mktemp("tls-proxy") / "requests.jsonl", scheme="https")
    proxy.start("--cert-file", str(certificate.cert_file), "--key-file", str(certificate.key_file))
    yield proxy
    proxy.stop()


def test_proxy_verification_mode_full_rejects_an_untrusted_proxy_certificate(make_connector, fake_openai, tls_proxy,
                                                                            actions_config, caplog):
    tls_proxy.clear()
    actions_config({"proxyUrl": tls_proxy.url})
    execution = run(make_connector(api_url=fake_openai.url("ok"), api_key=SECRET))
    message = execution.envelope["service_message"]
    assert "TLS connection to" in message and f"through the proxy 127.0.0.1:{tls_proxy.port}" in message
    assert tls_proxy.seen() == [] and not fake_openai.requests
    assert_recorded_once(execution, caplog, outcome="failure")


def test_proxy_verification_mode_none_accepts_an_untrusted_proxy_certificate(make_connector, fake_openai, tls_proxy,
                                                                            actions_config, caplog):
    tls_proxy.clear()
    actions_config({"proxyUrl": tls_proxy.url, "ssl": {"proxyVerificationMode": "none"}})
    execution = run(make_connector(api_url=fake_openai.url("ok"), api_key=SECRET))
    assert execution.envelope["status"] == "ok", execution.envelope
    assert [(host, port) for _m, host, port, _p in forwarded(tls_proxy)] == [("127.0.0.1", fake_openai.port)]
    assert_recorded_once(execution, caplog, outcome="success")


# --- allowedHosts ------------------------------------------------------------------------------------------------

def form_data(**overrides):
    return {"name": "Local", "provider": "OpenAI", "api_url": "http://127.0.0.1:9/v1/chat/completions",
            "default_model": "", "organization_id": "", "project_id": "", "headers": "", "api_key": SECRET, **overrides}


def api_body(url="http://127.0.0.1:9/v1/chat/completions"):
    return {"name": "Local", "connector_type_id": ".gen-ai", "config": {"apiProvider": "OpenAI", "apiUrl": url},
            "secrets": {"apiKey": SECRET}}


def test_the_form_refuses_to_create_a_connector_for_a_disallowed_host(client, connector_admin, actions_config):
    actions_config({"allowedHosts": ["api.openai.com"]})
    client.force_login(connector_admin)
    response = client.post(reverse("connectors:create"), form_data())
    assert response.status_code == 200 and NOT_ALLOWED in response.content.decode()
    assert not Connector.objects.exists()


def test_the_form_refuses_to_update_a_connector_to_a_disallowed_host(client, connector_admin, make_connector,
                                                                     actions_config):
    connector = make_connector(api_url="https://api.openai.com/v1/chat/completions")
    actions_config({"allowedHosts": ["api.openai.com"]})
    client.force_login(connector_admin)
    response = client.post(reverse("connectors:edit", args=[connector.pk]), form_data())
    assert response.status_code == 200 and NOT_ALLOWED in response.content.decode()
    connector.refresh_from_db()
    assert connector.api_url == "https://api.openai.com/v1/chat/completions"


def test_the_form_accepts_an_allowed_host(client, connector_admin, actions_config):
    actions_config({"allowedHosts": ["127.0.0.1"]})
    client.force_login(connector_admin)
    assert client.post(reverse("connectors:create"), form_data()).status_code == 302
    assert Connector.objects.get().api_host == "127.0.0.1"


def test_the_api_refuses_to_create_a_connector_for_a_disallowed_host(client, connector_admin, actions_config):
    actions_config({"allowedHosts": ["api.openai.com", "*.example.com"]})
    response = client.post("/api/actions/connector", api_body(), content_type="application/json",
                           HTTP_KBN_XSRF="true", HTTP_AUTHORIZATION=basic_auth(connector_admin))
    assert response.status_code == 400
    assert response.json() == {
        "statusCode": 400,
        "error": "Bad Request",
        # Kibana's sentence (docs/KIBANA.md 6), which the API integration test asserts.
        "message": "error validating action type config: Error configuring OpenAI action: Error: error validating "
                   f'url: target url "{api_body()["config"]["apiUrl"]}" is not added to the Kibana config '
                   "xpack.actions.allowedHosts",
    }
    assert not Connector.objects.exists()


def test_the_api_refuses_to_update_a_connector_to_a_disallowed_host(client, connector_admin, make_connector,
                                                                    actions_config):
    connector = make_connector(api_url="https://api.openai.com/v1/chat/completions")
    actions_config({"allowedHosts": ["api.openai.com"]})
    response = client.put(f"/api/actions/connector/{connector.pk}", {"name": "x", "config": api_body()["config"]},
                          content_type="application/json", HTTP_KBN_XSRF="true", HTTP_AUTHORIZATION=basic_auth(connector_admin))
    assert response.status_code == 400
    assert response.json()["message"].startswith("error validating action type config: Error configuring OpenAI ")
    assert "is not added to the Kibana config xpack.actions.allowedHosts" in response.json()["message"]
    connector.refresh_from_db()
    assert connector.api_url == "https://api.openai.com/v1/chat/completions" and connector.name == "Test connector"


def test_an_empty_allowed_hosts_list_blocks_every_host(client, connector_admin, make_connector, fake_openai,
                                                       actions_config, caplog):
    connector = make_connector(api_url=fake_openai.url("ok"), api_key=SECRET)
    actions_config({"allowedHosts": []})
    response = client.post("/api/actions/connector", api_body("https://api.openai.com/v1/chat/completions"),
                           content_type="application/json", HTTP_KBN_XSRF="true", HTTP_AUTHORIZATION=basic_auth(connector_admin))
    assert response.status_code == 400 and "xpack.actions.allowedHosts" in response.json()["message"]
    execution = run(connector)
    assert execution.envelope["message"] == (
        "error validating action type config: Error configuring OpenAI action: Error: error validating url: target "
        f'url "{connector.api_url}" is not added to the Kibana config xpack.actions.allowedHosts')
    assert not fake_openai.requests
    assert_recorded_once(execution, caplog, outcome="failure")


def test_execution_is_blocked_once_the_host_leaves_allowed_hosts(make_connector, fake_openai, actions_config, caplog):
    connector = make_connector(api_url=fake_openai.url("ok"), api_key=SECRET)
    actions_config({"allowedHosts": ["api.openai.com"]})
    execution = run(connector)
    # Kibana validates the connector's config again when it runs, so a host that left
    # allowedHosts is a config error (retry false, framework, no service_message; docs/KIBANA.md 6).
    assert execution.envelope == {
        "status": "error",
        "connector_id": connector.pk,
        "message": "error validating action type config: Error configuring OpenAI action: Error: error validating "
                   f'url: target url "{connector.api_url}" is not added to the Kibana config xpack.actions.allowedHosts',
        "retry": False,
        "errorSource": "framework",
    }
    assert not fake_openai.requests
    assert_recorded_once(execution, caplog, outcome="failure")


def redirect_url(server, target: str) -> str:
    return server.url("redirect", query="to=" + quote(target, safe=""))


def test_a_redirect_to_a_disallowed_host_is_not_followed(make_connector, fake_openai, actions_config, caplog):
    actions_config({"allowedHosts": ["127.0.0.1"]})
    target = f"http://localhost:{fake_openai.port}/ok/v1/chat/completions"
    execution = run(make_connector(api_url=redirect_url(fake_openai, target), api_key=SECRET))
    # A redirect target is checked while running: Kibana's "Unexpected API Error" form (docs/KIBANA.md 6).
    assert execution.envelope["service_message"] == (
        f'Status code: undefined. Message: Unexpected API Error: ERR_HOST_NOT_ALLOWED - The host "localhost" {NOT_ALLOWED}.')
    assert [r.path for r in fake_openai.requests] == ["/redirect/v1/chat/completions"]
    assert_recorded_once(execution, caplog, outcome="failure")


def test_a_redirect_to_an_allowed_host_is_followed_without_the_key(make_connector, fake_openai, actions_config, caplog):
    actions_config({"allowedHosts": ["127.0.0.1", "localhost"]})
    target = f"http://localhost:{fake_openai.port}/ok/v1/chat/completions"
    execution = run(make_connector(api_url=redirect_url(fake_openai, target), api_key=SECRET))
    assert execution.envelope["status"] == "ok", execution.envelope
    first, second = fake_openai.requests
    assert (second.method, second.path, second.json()["messages"]) == ("POST", "/ok/v1/chat/completions",
                                                                      first.json()["messages"])
    assert first.headers["authorization"] == f"Bearer {SECRET}"
    assert "authorization" not in second.headers  # another host never receives the key
    assert_recorded_once(execution, caplog, outcome="success")


def test_a_redirect_on_the_same_origin_keeps_the_key(make_connector, fake_openai, caplog):
    target = f"http://127.0.0.1:{fake_openai.port}/ok/v1/chat/completions"
    execution = run(make_connector(api_url=redirect_url(fake_openai, target), api_key=SECRET))
    assert execution.envelope["status"] == "ok"
    assert fake_openai.requests[1].headers["authorization"] == f"Bearer {SECRET}"


def test_a_redirect_from_https_to_plain_http_drops_the_key(make_connector, tls, ca, fake_openai, actions_config, caplog):
    actions_config({"customHostSettings": [host_entry(tls, certificateAuthoritiesData=ca.pem)]})
    target = f"http://127.0.0.1:{fake_openai.port}/ok/v1/chat/completions"
    execution = run(make_connector(api_url=redirect_url(tls, target), api_key=SECRET))
    assert execution.envelope["status"] == "ok", execution.envelope
    assert tls.requests[0].headers["authorization"] == f"Bearer {SECRET}"
    assert "authorization" not in fake_openai.requests[0].headers
    assert_recorded_once(execution, caplog, outcome="success")


def test_too_many_redirects_is_an_error(make_connector, fake_openai, caplog):
    url = fake_openai.url("ok")
    for _ in range(6):
        url = redirect_url(fake_openai, url)
    execution = run(make_connector(api_url=url, api_key=SECRET))
    assert execution.envelope["service_message"] == (
        "Status code: undefined. Message: Unexpected API Error: ERR_FR_TOO_MANY_REDIRECTS - Too many redirects (more than 5).")
    assert len(fake_openai.requests) == 6
    assert_recorded_once(execution, caplog, outcome="failure")


def test_a_provider_cookie_is_never_sent_back_on_later_calls(make_connector, fake_openai):
    """The pooled client lives as long as the server's event loop; it must not become a cookie jar shared by every
    connector and caller."""
    import json as json_module

    from asgiref.sync import async_to_sync

    from connectors.outbound.execution import execute
    from usage.models import EventSource

    # By host name: cookie jars ignore cookies from IP addresses.
    first = make_connector(api_url=fake_openai.url("cookie").replace("127.0.0.1", "localhost"), api_key=SECRET)
    second = make_connector(api_url=fake_openai.url("ok").replace("127.0.0.1", "localhost"), api_key=SECRET)
    params = {"subAction": "run", "subActionParams": {"body": json_module.dumps({"messages": [{"role": "user", "content": "hi"}]})}}

    async def three_calls_in_one_loop():
        for connector in (first, first, second):
            execution = await execute(connector, params, user=None, source=EventSource.API)
            assert execution.envelope["status"] == "ok"

    async_to_sync(three_calls_in_one_loop)()
    assert len(fake_openai.requests) == 3
    assert all("cookie" not in request.headers for request in fake_openai.requests)


def test_the_pooled_clients_close_with_their_event_loop(make_connector, fake_openai):

    from asgiref.sync import async_to_sync

    from connectors.outbound import transport
    from connectors.outbound.execution import execute
    from usage.models import EventSource

    connector = make_connector(api_url=fake_openai.url("ok"), api_key=SECRET)
    clients = []

    async def call():
        params = {"subAction": "run", "subActionParams": {"body": '{"messages": [{"role": "user", "content": "hi"}]}'}}
        await execute(connector, params, user=None, source=EventSource.API)
        clients.extend(transport._clients.get().values())

    async_to_sync(call)()  # a loop of its own, as Django's test client and asgiref give each call
    assert clients and all(client.closed for client in clients)

