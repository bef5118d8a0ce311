"""Alerts delivered once to a real SMTP server and a real webhook receiver, and retried when the receiver fails."""

import datetime as dt
import hashlib
import hmac
import json
import socket
from concurrent.futures import ThreadPoolExecutor

import pytest
from aiosmtpd.controller import Controller
from django.db import connection
from django.utils import timezone

from tests.servers.webhook_receiver import Receiver
from usage.governance import alerts
from usage.governance.models import Alert, AlertChannel, AlertDelivery, ChannelKind, DeliveryStatus, ErrorRateRule
from usage.governance.webhooks import DELIVERY_FAILED

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def loopback_receivers_allowed(actions_config):
    """The receivers listen on 127.0.0.1, which webhooks reach only when allowedHosts lists it."""
    actions_config({"allowedHosts": ["*", "127.0.0.1"]})


class MailBox:
    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's handler protocol
        self.messages.append((envelope.rcpt_tos, envelope.content.decode()))
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp_server(settings):
    box = MailBox()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", port
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    yield box
    controller.stop()


@pytest.fixture
def receiver():
    made = []

    def make(failures=0):
        made.append(Receiver(failures))
        return made[-1]

    yield make
    for r in made:
        r.close()


def test_an_alert_is_raised_once_per_key():
    assert alerts.raise_alert("budget:1:2026-11:threshold", "budget_threshold", "80% of Team used") is True
    assert alerts.raise_alert("budget:1:2026-11:threshold", "budget_threshold", "80% of Team used") is False
    assert Alert.objects.count() == 1


@pytest.mark.skipif("connection.vendor == 'sqlite'",
                    reason="concurrent writers are PostgreSQL's case (SQLite has one writer); CI runs both")
def test_an_alert_is_raised_once_however_many_threads_see_it():
    AlertChannel.objects.create(name="ops", kind=ChannelKind.EMAIL, target="ops@example.com")

    def one(_):
        try:
            return alerts.raise_alert("errors:9:123", "error_rate", "too many errors")
        finally:
            connection.close()

    with ThreadPoolExecutor(6) as pool:
        created = list(pool.map(one, range(24)))
    assert created.count(True) == 1
    assert AlertDelivery.objects.count() == 1


def test_email_is_delivered_once_to_a_real_smtp_server(smtp_server):
    AlertChannel.objects.create(name="ops", kind=ChannelKind.EMAIL, target="ops@example.com, lead@example.com")
    alerts.raise_alert("budget:3:2026-11-29:reached", "budget_reached", 'Budget "Team" is used up')
    assert alerts.send_due_deliveries() == 1
    assert alerts.send_due_deliveries() == 0
    assert len(smtp_server.messages) == 1
    recipients, content = smtp_server.messages[0]
    assert sorted(recipients) == ["lead@example.com", "ops@example.com"]
    assert 'Budget "Team" is used up' in content
    assert AlertDelivery.objects.get().status == DeliveryStatus.SENT


def test_a_webhook_gets_signed_slack_compatible_json(receiver):
    hook = receiver()
    channel = AlertChannel(name="slack", kind=ChannelKind.WEBHOOK, target=hook.url)
    channel.set_secret("whsec-test")
    channel.save()
    alerts.raise_alert("ratelimit:4:2026-11-29T10", "rate_limited", "Rate limit reached for connector c")
    assert alerts.send_due_deliveries() == 1
    headers, body = hook.requests[0]
    payload = json.loads(body)
    assert "Rate limit reached for connector c" in payload["text"]
    assert payload["alert"]["kind"] == "rate_limited"
    stamp, signature = (part.split("=", 1)[1] for part in headers[alerts.SIGNATURE_HEADER].split(","))
    expected = hmac.new(b"whsec-test", f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(signature, expected)


def test_a_failing_receiver_is_retried_with_backoff_until_it_answers(receiver):
    hook = receiver(failures=2)
    AlertChannel.objects.create(name="hook", kind=ChannelKind.WEBHOOK, target=hook.url)
    alerts.raise_alert("budget:5:p:threshold", "budget_threshold", "80%")
    now = timezone.now()
    assert alerts.send_due_deliveries(now) == 0
    delivery = AlertDelivery.objects.get()
    assert (delivery.attempts, delivery.status) == (1, DeliveryStatus.PENDING)
    assert delivery.last_error == DELIVERY_FAILED
    assert delivery.next_attempt_at - now >= dt.timedelta(seconds=29)
    # Not due yet: nothing is sent again before the backoff.
    assert alerts.send_due_deliveries(now + dt.timedelta(seconds=10)) == 0
    assert len(hook.requests) == 1
    assert alerts.send_due_deliveries(now + dt.timedelta(seconds=31)) == 0  # second failure
    delivery.refresh_from_db()
    assert delivery.next_attempt_at - now >= dt.timedelta(seconds=120)
    assert alerts.send_due_deliveries(now + dt.timedelta(hours=1)) == 1
    delivery.refresh_from_db()
    assert (delivery.attempts, delivery.status, len(hook.requests)) == (3, DeliveryStatus.SENT, 3)


def test_an_unreachable_webhook_error_names_no_url():
    AlertChannel.objects.create(name="dead", kind=ChannelKind.WEBHOOK, target="http://user:s3cret@127.0.0.1:9/x")
    alerts.raise_alert("k", "error_rate", "m")
    alerts.send_due_deliveries()
    assert "s3cret" not in AlertDelivery.objects.get().last_error


def test_a_connector_over_its_error_rate_raises_one_alert_per_window(django_user_model):
    from usage.models import ExecutionEvent, Outcome

    ErrorRateRule.objects.create(connector_id="flaky", threshold_percent=50, window_minutes=10, min_requests=4)
    now = timezone.now()
    events = [
        ExecutionEvent(connector_id="flaky", connector_name="Flaky", source="api", sub_action="run",
                       outcome=Outcome.FAILURE if i < 3 else Outcome.SUCCESS, timestamp=now - dt.timedelta(minutes=1))
        for i in range(5)
    ]
    ExecutionEvent.objects.insert_batch(events)
    assert alerts.check_error_rates(now) == 1
    assert alerts.check_error_rates(now) == 0
    assert "60.0% of 5 executions failed" in Alert.objects.get().message


def test_an_error_rate_under_the_threshold_or_too_few_calls_raises_nothing():
    from usage.models import ExecutionEvent, Outcome

    ErrorRateRule.objects.create(connector_id="ok", threshold_percent=50, window_minutes=10, min_requests=4)
    now = timezone.now()
    ExecutionEvent.objects.insert_batch([ExecutionEvent(connector_id="ok", connector_name="Ok", source="api", sub_action="run",
                                  outcome=Outcome.FAILURE, timestamp=now - dt.timedelta(minutes=1))
                   for _ in range(3)])
    assert alerts.check_error_rates(now) == 0
