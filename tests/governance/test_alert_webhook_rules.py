"""Alert webhooks follow the outbound rules (usage/governance/webhooks.py, README "Guarantees"): targets that are not
public are refused when saved and when sent, the connection goes to the address checked, no redirect is followed,
proxies come from ACTIONS_CONFIG alone, and every failed delivery shows the same words. On real sockets: loopback
receivers, a server that never answers, one that speaks another protocol, and a real forward proxy (proxy.py)."""

import socket
import threading
from urllib.parse import urlsplit

import pytest
from django.utils import timezone

from tests.helpers.outbound import closed_port
from tests.servers.forward_proxy import ForwardProxy
from tests.servers.tls import CertificateAuthority
from tests.servers.webhook_receiver import Receiver
from usage.governance import alerts
from usage.governance.models import AlertChannel, AlertDelivery, ChannelKind, DeliveryStatus
from usage.governance.webhooks import DELIVERY_FAILED

pytestmark = pytest.mark.django_db(transaction=True)

PUBLIC_ONLY = "Only public addresses can be reached, unless the allowedHosts networking setting (ACTIONS_CONFIG)"
LOOPBACK_ALLOWED = {"allowedHosts": ["*", "127.0.0.1"]}


@pytest.fixture
def receiver():
    made = []

    def make(**options):
        made.append(Receiver(**options))
        return made[-1]

    yield make
    for r in made:
        r.close()


def channel_form(target: str) -> dict:
    return {"name": "Hook", "kind": "webhook", "target": target, "enabled": "on", "secret": ""}


def webhook(target: str) -> AlertChannel:
    """A channel stored as it is, as one saved before these rules or before allowedHosts changed."""
    return AlertChannel.objects.create(name=f"hook {AlertChannel.objects.count()}", kind=ChannelKind.WEBHOOK,
                                       target=target)


# -- refused when saved ------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("target", "message"), [
    ("http://127.0.0.1:6379/", 'The address "127.0.0.1" is a loopback address.'),
    ("http://127.0.0.1:5432/", 'The address "127.0.0.1" is a loopback address.'),
    ("http://[::1]:8000/hook", 'The address "::1" is a loopback address.'),
    ("http://[::ffff:127.0.0.1]/hook", 'The address "::ffff:127.0.0.1" is a loopback address.'),
    ("http://0.0.0.0:8000/hook", 'The address "0.0.0.0" is the unspecified address.'),
    ("http://[::]:8000/hook", 'The address "::" is the unspecified address.'),
    ("http://169.254.169.254/latest/meta-data/", 'The address "169.254.169.254" is a link-local address.'),
    ("http://[fe80::1]/hook", 'The address "fe80::1" is a link-local address.'),
    ("http://10.0.0.5/hook", 'The address "10.0.0.5" is a private or reserved address.'),
    ("http://172.16.3.4/hook", 'The address "172.16.3.4" is a private or reserved address.'),
    ("https://192.168.1.10/hook", 'The address "192.168.1.10" is a private or reserved address.'),
    ("http://[fd00::5]/hook", 'The address "fd00::5" is a private or reserved address.'),
    ("http://100.64.0.1/hook", 'The address "100.64.0.1" is a non-public address.'),
    ("http://localhost:6379/", 'The host "localhost" resolves to a loopback address.'),
    ("http://127.1:6379/", 'The host "127.1" resolves to a loopback address.'),
    ("http://2130706433:6379/", 'The host "2130706433" resolves to a loopback address.'),
    ("http://user:pw@hooks.example.com/x", "The URL cannot contain a user name or password (user:pass@host); "
                                           "deliveries are authenticated with the signing secret instead."),
    ("ftp://hooks.example.com/x", "The URL must start with http:// or https://."),
    ("gopher://127.0.0.1:6379/_INFO", "The URL must start with http:// or https://."),
    ("http://hooks.example.com\\@127.0.0.1/", "The URL cannot contain a backslash"),
])
def test_the_channel_form_refuses_a_target_that_is_not_public_with_a_clear_message(client, connector_admin, target,
                                                                                     message):
    client.force_login(connector_admin)
    response = client.post("/usage/alerts/channels/new/", channel_form(target))
    assert response.status_code == 200
    [error] = response.context["form"].errors["target"]
    assert error.startswith(message), error
    if "address" in message:
        assert PUBLIC_ONLY in error
    assert not AlertChannel.objects.exists()


def test_editing_a_channel_to_a_private_target_is_refused(client, connector_admin):
    channel = AlertChannel.objects.create(name="Hook", kind=ChannelKind.WEBHOOK, target="https://hooks.example.com/x")
    client.force_login(connector_admin)
    response = client.post(f"/usage/alerts/channels/{channel.pk}/edit/", channel_form("http://169.254.169.254/"))
    assert "is a link-local address" in response.context["form"].errors["target"][0]
    channel.refresh_from_db()
    assert channel.target == "https://hooks.example.com/x"


def test_a_host_outside_allowed_hosts_is_refused_when_saved(client, connector_admin, actions_config):
    actions_config({"allowedHosts": ["hooks.slack.com"]})
    client.force_login(connector_admin)
    response = client.post("/usage/alerts/channels/new/", channel_form("https://hooks.example.com/x"))
    assert response.context["form"].errors["target"] == [
        'The host "hooks.example.com" is not in the allowedHosts networking setting (ACTIONS_CONFIG).']


@pytest.mark.parametrize(("allowed", "target"), [
    (["*", "127.0.0.1"], "http://127.0.0.1:9000/hook"),
    (["*", "localhost"], "http://localhost:9000/hook"),
    (["*", "127.0.0.1"], "http://localhost:9000/hook"),  # the address the name resolves to, listed
    (["*", "[::1]"], "http://[0:0:0:0:0:0:0:1]:9000/hook"),  # the same address, spelt otherwise
])
def test_allowed_hosts_naming_the_host_or_its_address_lets_a_private_target_be_saved(
        client, connector_admin, actions_config, allowed, target):
    actions_config({"allowedHosts": allowed})
    client.force_login(connector_admin)
    response = client.post("/usage/alerts/channels/new/", channel_form(target))
    assert response.status_code == 302, response.context["form"].errors
    assert AlertChannel.objects.get().target == target


def test_a_wildcard_in_allowed_hosts_does_not_open_private_targets(client, connector_admin, actions_config):
    actions_config({"allowedHosts": ["*"]})
    client.force_login(connector_admin)
    response = client.post("/usage/alerts/channels/new/", channel_form("http://127.0.0.1:9000/hook"))
    assert PUBLIC_ONLY in response.context["form"].errors["target"][0]


def test_a_public_target_is_saved(client, connector_admin):
    client.force_login(connector_admin)
    assert client.post("/usage/alerts/channels/new/", channel_form("https://hooks.example.com/x")).status_code == 302


# -- refused when sent -------------------------------------------------------------------------------------------

def test_a_delivery_to_a_name_that_resolves_to_loopback_is_refused_and_nothing_is_sent(receiver, caplog):
    hook = receiver()
    webhook(f"http://localhost:{hook.port}/hook")  # localhost resolves to 127.0.0.1 here, which is not listed
    alerts.raise_alert("k1", "error_rate", "m")
    assert alerts.send_due_deliveries() == 0
    assert hook.requests == []
    delivery = AlertDelivery.objects.get()
    assert (delivery.status, delivery.last_error) == (DeliveryStatus.PENDING, DELIVERY_FAILED)
    assert 'The host "localhost" resolves to a loopback address' in caplog.text  # the operator's log says why


def test_a_delivery_is_refused_once_allowed_hosts_no_longer_lists_the_target(client, connector_admin, receiver,
                                                                            actions_config):
    hook = receiver()
    actions_config(LOOPBACK_ALLOWED)
    client.force_login(connector_admin)
    assert client.post("/usage/alerts/channels/new/", channel_form(hook.url)).status_code == 302
    alerts.raise_alert("k1", "error_rate", "first")
    assert alerts.send_due_deliveries() == 1 and len(hook.requests) == 1
    actions_config({"allowedHosts": ["*"]})
    alerts.raise_alert("k2", "error_rate", "second")
    assert alerts.send_due_deliveries() == 0
    assert len(hook.requests) == 1


def test_a_target_saved_with_credentials_is_refused_when_sent(receiver, actions_config):
    hook = receiver()
    actions_config(LOOPBACK_ALLOWED)
    webhook(hook.url.replace("http://", "http://user:s3cret@"))
    alerts.raise_alert("k", "error_rate", "m")
    assert alerts.send_due_deliveries() == 0
    assert hook.requests == []
    assert AlertDelivery.objects.get().last_error == DELIVERY_FAILED


def test_the_connection_goes_to_the_address_that_was_checked(receiver, actions_config, monkeypatch):
    """DNS rebinding: a name answers an allowed address to the check and a forbidden one to whoever asks next."""
    good = receiver(host="127.0.0.1")
    evil = receiver(host="127.0.0.2", port=good.port)
    actions_config(LOOPBACK_ALLOWED)
    real_getaddrinfo, asked = socket.getaddrinfo, []

    def rebinding(host, port, *args, **kwargs):
        if (host.decode() if isinstance(host, bytes) else host) != "rebind.test":
            return real_getaddrinfo(host, port, *args, **kwargs)
        asked.append(host)
        address = "127.0.0.1" if len(asked) == 1 else "127.0.0.2"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    webhook(f"http://rebind.test:{good.port}/hook")
    alerts.raise_alert("k", "error_rate", "m")
    assert alerts.send_due_deliveries() == 1
    assert evil.requests == [] and len(good.requests) == 1
    headers, _body = good.requests[0]
    assert headers["Host"] == f"rebind.test:{good.port}"  # the name still travels in Host
    assert asked == ["rebind.test"]


def test_an_https_webhook_is_verified_against_its_name_though_the_connection_goes_to_the_address(
        receiver, actions_config, tmp_path):
    ca = CertificateAuthority(tmp_path)
    hook = receiver(tls=ca.issue("localhost", stem="hook").server_context())
    target = hook.url.replace("127.0.0.1", "localhost")
    trusted = {"url": f"https://localhost:{hook.port}", "ssl": {"certificateAuthoritiesData": ca.pem}}
    actions_config({"allowedHosts": ["*", "localhost"], "customHostSettings": [trusted]})
    webhook(target)
    alerts.raise_alert("k1", "error_rate", "m")
    assert alerts.send_due_deliveries() == 1 and len(hook.requests) == 1
    # Without the CA, the same server is refused: the certificate is checked, for the name "localhost".
    actions_config({"allowedHosts": ["*", "localhost"]})
    alerts.raise_alert("k2", "error_rate", "m")
    assert alerts.send_due_deliveries() == 0 and len(hook.requests) == 1


def test_a_redirect_is_not_followed(receiver, actions_config):
    inside = receiver(host="127.0.0.2")
    hook = receiver(redirect_to=inside.url)
    actions_config(LOOPBACK_ALLOWED)
    webhook(hook.url)
    alerts.raise_alert("k", "error_rate", "m")
    assert alerts.send_due_deliveries() == 0
    assert len(hook.requests) == 1 and inside.requests == []
    assert AlertDelivery.objects.get().last_error == DELIVERY_FAILED


# -- proxies from ACTIONS_CONFIG only ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def forward_proxy(tmp_path_factory):
    proxy = ForwardProxy(tmp_path_factory.mktemp("proxy") / "requests.jsonl").start()
    yield proxy
    proxy.stop()


def test_deliveries_go_through_the_proxy_of_actions_config(receiver, forward_proxy, actions_config):
    forward_proxy.clear()
    hook = receiver()
    actions_config({**LOOPBACK_ALLOWED, "proxyUrl": forward_proxy.url, "proxyHeaders": {"X-Proxy-Token": "t0ken"}})
    webhook(hook.url)
    alerts.raise_alert("k", "error_rate", "m")
    assert alerts.send_due_deliveries() == 1
    [seen] = forward_proxy.seen()
    assert (seen["method"], seen["host"], seen["port"], seen["path"]) == ("POST", "127.0.0.1", hook.port, "/hook")
    assert seen["headers"]["x-proxy-token"] == "t0ken"
    assert len(hook.requests) == 1


def test_a_proxy_does_not_open_private_targets(receiver, forward_proxy, actions_config):
    forward_proxy.clear()
    hook = receiver()
    actions_config({"proxyUrl": forward_proxy.url})
    webhook(hook.url)
    alerts.raise_alert("k", "error_rate", "m")
    assert alerts.send_due_deliveries() == 0
    assert forward_proxy.seen() == [] and hook.requests == []


def test_proxy_environment_variables_are_ignored(receiver, forward_proxy, actions_config, monkeypatch):
    forward_proxy.clear()
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.setenv(name, forward_proxy.url)
    hook = receiver()
    actions_config(LOOPBACK_ALLOWED)
    webhook(hook.url)
    alerts.raise_alert("k", "error_rate", "m")
    assert alerts.send_due_deliveries() == 1
    assert forward_proxy.seen() == [] and len(hook.requests) == 1


# -- one neutral error -------------------------------------------------------------------------------------------

class SilentServer:
    """Accepts connections and never answers (a port that holds the request)."""

    def __init__(self, greeting: bytes = b""):
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.greeting = greeting
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                connection, _ = self.socket.accept()
            except OSError:
                return
            self.connections.append(connection)
            if self.greeting:
                connection.sendall(self.greeting)  # another protocol's banner, as Redis or an SMTP server sends
                connection.close()

    def close(self):
        self.socket.close()
        for connection in self.connections:
            connection.close()


def test_every_failed_delivery_shows_the_same_words_on_the_alerts_page(client, connector_admin, receiver,
                                                                       actions_config, monkeypatch):
    monkeypatch.setattr(alerts, "WEBHOOK_TIMEOUT_SECONDS", 0.5)
    actions_config(LOOPBACK_ALLOWED)
    failing = receiver(failures=99)
    silent, other_protocol = SilentServer(), SilentServer(greeting=b"-ERR unknown command 'POST'\r\n")
    try:
        targets = {
            "closed port": f"http://127.0.0.1:{closed_port()}/hook",
            "HTTP 500": failing.url,
            "no answer": f"http://127.0.0.1:{silent.port}/hook",
            "another protocol": f"http://127.0.0.1:{other_protocol.port}/hook",
            "refused address": "http://10.0.0.5:6379/",
            "unknown name": "http://hooks.example.invalid/x",
        }
        for number, target in enumerate(targets.values()):  # names that give nothing away themselves
            AlertChannel.objects.create(name=f"hook {number}", kind=ChannelKind.WEBHOOK, target=target)
        alerts.raise_alert("k", "error_rate", "m")
        now = timezone.now()
        assert alerts.send_due_deliveries(now) == 0
    finally:
        silent.close()
        other_protocol.close()
    deliveries = AlertDelivery.objects.select_related("channel")
    assert [d.last_error for d in deliveries] == [DELIVERY_FAILED] * len(targets)
    # The next attempt counts from the round's start, so it does not tell how long each attempt took either.
    assert {d.next_attempt_at for d in deliveries} == {now + alerts.backoff_after(1)}
    client.force_login(connector_admin)
    html = client.get("/usage/alerts/").content.decode()
    assert html.count(f"Last error: {DELIVERY_FAILED}") == len(targets)
    shown = html.replace(DELIVERY_FAILED, "")
    for target in targets.values():  # the channels' own addresses are listed: a random port can hold "500"
        shown = shown.replace(urlsplit(target).netloc, "")
    for detail in ("500", "ECONNREFUSED", "refused", "ConnectError", "Timeout", "RemoteProtocolError", "private",
                   "resolve"):
        assert detail not in shown, detail
