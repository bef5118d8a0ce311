"""Keeps the event log in shape while the server runs: partitions ahead of time, and EVENT_RETENTION_DAYS applied.

``maintain_event_log`` creates the coming days' partitions (usage/models/partitions.py), drops the events older
than ``EVENT_RETENTION_DAYS`` (whole day partitions on PostgreSQL: usage.operations.maintenance.prune_events, then
release_pruned_partitions), and reports the events waiting in the default partition. ``manage.py
maintain_usage_partitions`` runs it (from cron if you like); each server process also runs it at start-up and
every hour, in a thread of its own. On PostgreSQL an advisory lock lets one process at a time do it; the others
skip that round.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from django.conf import settings
from django.db import DatabaseError, connection

from usage.models.partitions import default_partition_report, ensure_partitions, release_pruned_partitions
from usage.operations.maintenance import prune_events, retention_cutoff

KEEP_INTERVAL_SECONDS = 3600
ADVISORY_LOCK_KEY = 7_240_024  # any number no other part of the app locks on

logger = logging.getLogger(__name__)


@dataclass
class KeepReport:
    ran: bool = True
    created: list[date] = field(default_factory=list)
    retention_cutoff: datetime | None = None
    pruned: int = 0
    released: int = 0  # detached day partitions dropped
    in_default_partition: int = 0


def maintain_event_log(now: datetime | None = None) -> KeepReport:
    """Partitions ahead, the retention applied, the default partition checked; ``ran`` False when another process
    holds the lock."""
    now = now or datetime.now(UTC)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", [ADVISORY_LOCK_KEY])
            if not cursor.fetchone()[0]:
                return KeepReport(ran=False)
    try:
        report = KeepReport(created=ensure_partitions(connection, today=now.date()))
        if settings.EVENT_RETENTION_DAYS:
            report.retention_cutoff = retention_cutoff(now, settings.EVENT_RETENTION_DAYS)
            report.pruned = prune_events(report.retention_cutoff)
        # Also what an interrupted prune_usage_events left: detached partitions wait only for this.
        report.released = release_pruned_partitions(connection)
        report.in_default_partition = default_partition_report(connection).rows
        if report.in_default_partition:
            logger.warning(
                "%d execution events are in the default partition (outside every day partition); "
                "`manage.py maintain_usage_partitions --repair` moves them into partitions of their own",
                report.in_default_partition,
            )
        return report
    finally:
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [ADVISORY_LOCK_KEY])


class EventLogKeeper:
    def __init__(self, interval: float = KEEP_INTERVAL_SECONDS):
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="event-log-keeper", daemon=True)

    def start(self) -> EventLogKeeper:
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                maintain_event_log()
            except DatabaseError as exc:  # the database is away: the next round tries again
                logger.warning("event log maintenance failed, retried in %d s: %s", self.interval, exc)
            finally:
                connection.close()
            self._stop.wait(self.interval)


_keeper: EventLogKeeper | None = None


def start_event_log_keeper() -> EventLogKeeper:
    global _keeper
    if _keeper is None:
        _keeper = EventLogKeeper().start()
    return _keeper


def stop_event_log_keeper() -> None:
    global _keeper
    if _keeper is not None:
        _keeper.stop()
        _keeper = None
