from datetime import UTC, datetime, time

from django.core.management.base import CommandError
from django.db import connection, transaction
from django.utils import timezone
from django.utils.dateparse import parse_date

from connectors.audit import trail
from connectors.audit.audited_command import AuditedCommand
from connectors.audit.models import AuditRecord

BATCH = 10_000


class Command(AuditedCommand):
    help = (
        "Delete audit records older than a date (retention), and record that it ran. On PostgreSQL this calls "
        "audit_prune_before(), the only way past the trigger that keeps the table append-only."
    )

    def add_arguments(self, parser):
        parser.add_argument("--before", required=True, help="Delete records from before this day (YYYY-MM-DD, UTC).")
        parser.add_argument("--dry-run", action="store_true", help="Only count what would be deleted.")

    def handle(self, *args, before: str, dry_run: bool, **options):
        day = parse_date(before or "")
        if day is None:
            raise CommandError(f"--before: expected a date such as 2025-01-31, got {before!r}")
        cutoff = datetime.combine(day, time.min, tzinfo=UTC)
        if cutoff > timezone.now():
            raise CommandError("--before is in the future: that would delete records of today")
        older = AuditRecord.objects.filter(at__lt=cutoff)
        if dry_run:
            self.stdout.write(f"{older.count()} audit record(s) from before {day} would be deleted.")
            return
        if connection.vendor == "postgresql":
            deleted = _prune_on_postgresql(day)
        else:
            with transaction.atomic():
                deleted = 0
                while True:
                    ids = list(older.order_by("at", "id").values_list("id", flat=True)[:BATCH])
                    if not ids:
                        break
                    deleted += AuditRecord.objects.filter(id__in=ids).delete()[0]
                trail.append("audit_trail", "prune", object_repr="audit trail",
                                 changes={"before": day.isoformat(), "deleted": deleted})
        self.stdout.write(f"Deleted {deleted} audit record(s) from before {day}.")


def _prune_on_postgresql(day) -> int:
    """The trigger of migration audit/0003 lets a DELETE through only from the database function
    ``audit_prune_before``, which also writes the ``prune`` record. It must be the outermost call of the statement
    (the trigger looks at the call stack), so it is called on its own, not from a DO block or another function."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT audit_prune_before(%s)", [day])
        return cursor.fetchone()[0]
