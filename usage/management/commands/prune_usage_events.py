from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from usage.models import ExecutionEvent
from usage.operations.maintenance import parse_age, prune_cutoff, prune_events


class Command(BaseCommand):
    help = (
        "Delete raw execution events older than --older-than (e.g. 90d), in batches. The usage rollups are kept, "
        "so the dashboards still show the pruned period; only the raw-event CSV export loses it."
    )

    def add_arguments(self, parser):
        parser.add_argument("--older-than", required=True, help="An age: 90d, 12h or 2w.")
        parser.add_argument("--dry-run", action="store_true", help="Count the events that would be deleted.")

    def handle(self, *args, older_than: str, dry_run: bool = False, **options):
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
