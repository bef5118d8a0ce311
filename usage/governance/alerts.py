"""Alerts: raised once per threshold and period, delivered to every enabled channel, retried with backoff.

Raising is idempotent across processes and hosts: an alert is a row with a unique key (for example
``budget:12:2026-11-01:threshold``); whoever inserts it first creates its deliveries, everyone else finds it there.
The execution path never waits for any of this: ``raise_later`` queues the alert for this process's sender thread,
which writes it, sends due deliveries, and evaluates error-rate rules once a minute.

Delivery: email through Django's mail settings (EMAIL_URL), or a webhook: a JSON POST whose ``text`` makes it a
Slack incoming-webhook message, signed with HMAC-SHA256 of ``<timestamp>.<body>`` under the channel's secret in
``X-Connectors-Admin-Signature: t=<timestamp>,v1=<hex>`` (README, "Alerts"), sent under the outbound rules of
usage/governance/webhooks.py. A failed delivery is retried after
30 s, 2 min, 10 min, 30 min, 2 h and then every 6 h until MAX_ATTEMPTS, then marked failed. Deliveries are claimed
with a conditional UPDATE, so two senders never send the same one at once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import queue
import threading
import time

from django.conf import settings
from django.core.mail import send_mail
from django.db import IntegrityError, close_old_connections, transaction
from django.db.models import Count, Q
from django.utils import timezone

from connectors.crypto import SecretUnavailable
from connectors.spaces.current import DEFAULT_SPACE_ID
from usage.governance.models import (
    Alert,
    AlertChannel,
    AlertDelivery,
    ChannelKind,
    DeliveryStatus,
    ErrorRateRule,
)
from usage.governance.webhooks import DELIVERY_FAILED, WebhookFailed, post_alert

BACKOFF_SECONDS = (30, 120, 600, 1800, 7200)
LATER_BACKOFF_SECONDS = 6 * 3600
MAX_ATTEMPTS = 10
CLAIM_SECONDS = 120  # a claimed delivery is retried by anyone after this, should its sender die mid-send
WEBHOOK_TIMEOUT_SECONDS = 10
SIGNATURE_HEADER = "X-Connectors-Admin-Signature"

logger = logging.getLogger(__name__)


def raise_alert(key: str, kind: str, message: str, *, connector_id: str = "", space_id: str = DEFAULT_SPACE_ID,
                details: dict | None = None) -> bool:
    """Record the alert and its deliveries to the enabled channels of ``space_id`` (the space of the rule that
    raises it), unless an alert with this key exists; True when this call created it."""
    try:
        with transaction.atomic():
            alert = Alert.objects.create(key=key[:200], kind=kind, space_id=space_id, connector_id=connector_id,
                                         message=message, details=details or {})
            now = timezone.now()
            AlertDelivery.objects.bulk_create(
                [AlertDelivery(alert=alert, channel=channel, next_attempt_at=now)
                 for channel in AlertChannel.objects.filter(space_id=space_id, enabled=True)]
            )
    except IntegrityError:
        return False
    logger.info("Alert raised: %s", message)
    return True


def backoff_after(attempts: int) -> dt.timedelta:
    seconds = BACKOFF_SECONDS[attempts - 1] if attempts <= len(BACKOFF_SECONDS) else LATER_BACKOFF_SECONDS
    return dt.timedelta(seconds=seconds)


def webhook_signature(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def webhook_body(alert: Alert) -> bytes:
    return json.dumps(
        {
            "text": f":rotating_light: connectors-admin: {alert.message}",
            "alert": {
                "key": alert.key,
                "kind": alert.kind,
                "space_id": alert.space_id,
                "connector_id": alert.connector_id,
                "message": alert.message,
                "details": alert.details,
                "raised_at": alert.raised_at.isoformat(),
            },
        },
        separators=(",", ":"),
    ).encode()


def _send(delivery: AlertDelivery) -> None:
    alert, channel = delivery.alert, delivery.channel
    if channel.kind == ChannelKind.EMAIL:
        send_mail(
            subject=f"[connectors-admin] {alert.get_kind_display()}",
            message=f"{alert.message}\n\nRaised at {alert.raised_at.isoformat()}.\n",
            from_email=settings.DEFAULT_FROM_EMAIL,
            recipient_list=channel.recipients,
        )
        return
    body = webhook_body(alert)
    headers = {"Content-Type": "application/json", "User-Agent": "connectors-admin-alerts"}
    if channel.secret_encrypted:
        headers[SIGNATURE_HEADER] = webhook_signature(channel.secret, int(time.time()), body)
    post_alert(channel.target, body, headers, WEBHOOK_TIMEOUT_SECONDS)


def _claim(delivery_id: int, now: dt.datetime) -> bool:
    """Take a due delivery for this sender: a conditional UPDATE that only one sender can win."""
    return bool(
        AlertDelivery.objects.filter(
            pk=delivery_id, status=DeliveryStatus.PENDING, next_attempt_at__lte=now
        ).update(next_attempt_at=now + dt.timedelta(seconds=CLAIM_SECONDS))
    )


def send_due_deliveries(now: dt.datetime | None = None, limit: int = 50) -> int:
    """Send every pending delivery that is due; returns how many were sent."""
    now = now or timezone.now()
    sent = 0
    due = list(
        AlertDelivery.objects.filter(status=DeliveryStatus.PENDING, next_attempt_at__lte=now)
        .order_by("next_attempt_at").values_list("pk", flat=True)[:limit]
    )
    for delivery_id in due:
        if not _claim(delivery_id, now):
            continue
        delivery = AlertDelivery.objects.select_related("alert", "channel").get(pk=delivery_id)
        delivery.attempts += 1
        try:
            _send(delivery)
        except Exception as exc:  # noqa: BLE001 - any failure of a channel is retried, and shown on the page
            shown, logged = _describe(delivery.channel, exc)
            delivery.last_error = shown[:500]
            if delivery.attempts >= MAX_ATTEMPTS:
                delivery.status = DeliveryStatus.FAILED
            else:
                # From the round's start, not from the failure: the time shown would otherwise tell how long the
                # attempt took, and so a refused port from a silent one.
                delivery.next_attempt_at = now + backoff_after(delivery.attempts)
            logger.warning("Alert delivery to %s failed (attempt %d): %s", delivery.channel, delivery.attempts, logged)
        else:
            delivery.status = DeliveryStatus.SENT
            delivery.sent_at = timezone.now()
            delivery.last_error = ""
            sent += 1
        delivery.save(update_fields=["attempts", "status", "next_attempt_at", "last_error", "sent_at"])
    return sent


def _describe(channel: AlertChannel, exc: Exception) -> tuple[str, str]:
    """What the alerts page shows about a failed delivery, and what the server log says.

    Every webhook failure shows the same words: whoever may edit a channel must not learn from the page which
    addresses and ports answer, or how (usage/governance/webhooks.py). The log, the operator's, says why; it names
    no URL, which may hold a secret in its path."""
    if isinstance(exc, SecretUnavailable):
        described = ("the channel's stored target or signing secret cannot be decrypted with the configured "
                     "CONNECTORS_ENCRYPTION_KEYS")
        return (DELIVERY_FAILED if channel.kind == ChannelKind.WEBHOOK else described), described
    if channel.kind == ChannelKind.WEBHOOK:
        return DELIVERY_FAILED, str(exc) if isinstance(exc, WebhookFailed) else type(exc).__name__
    described = f"{type(exc).__name__}: {exc}"
    return described, described


def check_error_rates(now: dt.datetime | None = None) -> int:
    """Raise an alert for each connector whose error rate over its rule's window reached the threshold. Once per
    rule and window: the key names the window's start, windows being aligned on multiples of their length.

    A rule counts the executions of its own space (README "Spaces"): a preconfigured connector is in every space,
    and another space's failures of it are not this rule's. The window (minutes, ending now) is read from the
    events, through the index event_connector_time_id (the connector's events of the window; the space a filter
    on them); the rollups' hours are too coarse for it."""
    from usage.models import ExecutionEvent, Outcome

    now = now or timezone.now()
    raised = 0
    for rule in ErrorRateRule.objects.filter(enabled=True):
        window = dt.timedelta(minutes=rule.window_minutes)
        start = now - window
        counts = ExecutionEvent.objects.filter(connector_id=rule.connector_id, space_id=rule.space_id,
                                               timestamp__gt=start, timestamp__lte=now).aggregate(
            total=Count("pk"), failed=Count("pk", filter=Q(outcome=Outcome.FAILURE)))
        total, failed = counts["total"], counts["failed"]
        if total < rule.min_requests or failed * 100 < rule.threshold_percent * total:
            continue
        slot = int(now.timestamp()) // int(window.total_seconds())
        rate = round(100 * failed / total, 1)
        if raise_alert(
            f"errors:{rule.pk}:{slot}", "error_rate",
            f"Connector {rule.connector_id}: {rate}% of {total} executions failed in the last "
            f"{rule.window_minutes} minutes (threshold {rule.threshold_percent}%).",
            connector_id=rule.connector_id, space_id=rule.space_id,
            details={"failed": failed, "total": total, "rate_percent": rate},
        ):
            raised += 1
    return raised


class AlertSender:
    """This process's sender thread: writes queued alerts, sends due deliveries, checks error rates each minute."""

    def __init__(self, tick_seconds: float = 5.0, error_rate_seconds: float = 60.0, periodic: bool = True):
        self.tick_seconds = tick_seconds
        self.periodic = periodic  # check error-rate rules (the server's senders; not one started on first use)
        self.error_rate_seconds = error_rate_seconds
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="alert-sender", daemon=True)

    def start(self) -> AlertSender:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        self._queue.put(None)
        self._thread.join(timeout)

    def raise_later(self, key: str, kind: str, message: str, **extra) -> None:
        self._queue.put((key, kind, message, extra))

    def _run(self) -> None:
        pending: list[tuple] = []  # alerts taken from the queue and not yet written (kept across failed rounds)
        last_error_check = 0.0
        while True:
            stopping = self._stopping.is_set()
            try:
                item = self._queue.get(timeout=0.5 if pending else self.tick_seconds) if not stopping else None
            except queue.Empty:
                item = None
            while item is not None:
                pending.append(item)
                item = None if self._queue.empty() else self._queue.get_nowait()
            pending = [item for item in pending if item is not None]
            try:
                while pending:
                    key, kind, message, extra = pending[0]
                    raise_alert(key, kind, message, **extra)
                    pending.pop(0)
                if self.periodic and time.monotonic() - last_error_check >= self.error_rate_seconds:
                    last_error_check = time.monotonic()
                    check_error_rates()
                send_due_deliveries()
            except Exception:
                logger.exception("The alert sender failed a round; it tries again")
            try:
                close_old_connections()
            except Exception:  # the database is away: the next round finds out again
                logger.debug("closing the alert sender's database connection failed", exc_info=True)
            if stopping or (self._stopping.is_set() and self._queue.empty() and not pending):
                return


_sender: AlertSender | None = None
_sender_lock = threading.Lock()


def start_alert_sender(periodic: bool = True) -> AlertSender:
    """This process's sender; the ASGI lifespan starts it with the server, ``raise_later`` on first use elsewhere."""
    global _sender
    with _sender_lock:
        if _sender is None:
            _sender = AlertSender(periodic=periodic).start()
        return _sender


def stop_alert_sender() -> None:
    global _sender
    if _sender is not None:
        _sender.stop()
        _sender = None


_raised_here: dict[str, None] = {}  # keys this process has already raised (insertion-ordered, bounded)
RAISED_HERE_MAX = 10_000


def raise_once(key: str, kind: str, message: str, **extra) -> None:
    """``raise_later`` unless this process raised the key already: once a budget is used up, every refused call
    would otherwise queue the same alert again (the unique key would still stop it, at one insert each)."""
    if key in _raised_here:
        return
    if len(_raised_here) >= RAISED_HERE_MAX:
        _raised_here.pop(next(iter(_raised_here)))
    _raised_here[key] = None
    raise_later(key, kind, message, **extra)


def raise_later(key: str, kind: str, message: str, **extra) -> None:
    """Queue an alert for this process's sender thread (started by the ASGI lifespan, or here on first use)."""
    start_alert_sender(periodic=False).raise_later(key, kind, message, **extra)
