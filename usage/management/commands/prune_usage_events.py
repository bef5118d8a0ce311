from datetime import UTC, datetime

from django.core.management.base import BaseCommand, CommandError
from django.db import connection
from django.utils import timezone

from usage.models import ExecutionEvent
from usage.models.partitions import release_pruned_partitions
from usage.operations.maintenance import parse_age, prune_cutoff, prune_events


def parse_before(raw: str) -> datetime:
    """``2026-01-31`` (midnight UTC) or an ISO 8601 time (UTC when it has no offset)."""
    try:
        moment = datetime.fromisoformat(raw.strip())
    except ValueError:
        raise CommandError(f"--before: {raw!r} is not a date (2026-01-31) or an ISO 8601 time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class Command(BaseCommand):
    help = (
        "Remove raw execution events older than --before (a date or time) or --older-than (an age such as 90d). "
        "On PostgreSQL whole day partitions are detached (instant), then dropped to give their disk space back, and "
        "only the day the cut falls in is deleted row by row. The usage rollups are kept, so the dashboards still "
        "show the pruned period; only the raw-event exports and the Logs tab lose it."
    )

    def add_arguments(self, parser):
        when = parser.add_mutually_exclusive_group(required=True)
        when.add_argument("--before", help="A date (2026-01-31, midnight UTC) or an ISO 8601 time.")
        when.add_argument("--older-than", help="An age: 90d, 12h or 2w (whole hours).")
        parser.add_argument("--dry-run", action="store_true", help="Count the events that would be removed.")

    def handle(self, *args, before: str | None = None, older_than: str | None = None, dry_run: bool = False,
               **options):
        if before is not None:
            cutoff = parse_before(before)
        else:
            try:
                age = parse_age(older_than)
            except ValueError as exc:
                raise CommandError(f"--older-than: {exc}") from None
            cutoff = prune_cutoff(timezone.now(), age)
        if dry_run:
            count = ExecutionEvent.objects.filter(timestamp__lt=cutoff).count()
            self.stdout.write(f"Would delete {count} events older than {cutoff:%Y-%m-%d %H:%M} UTC.")
            return
        deleted = prune_events(cutoff)
        self.stdout.write(
            self.style.SUCCESS(f"Deleted {deleted} events older than {cutoff:%Y-%m-%d %H:%M} UTC; rollups kept.")
        )
        released = release_pruned_partitions(connection)
        if released:
            self.stdout.write(f"Dropped {released} detached day partitions (their disk space is free again).")
