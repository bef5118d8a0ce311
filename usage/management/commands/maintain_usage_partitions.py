from django.core.management.base import BaseCommand
from django.db import connection

from usage.models.partitions import default_partition_report, is_partitioned, repair_default_partition
from usage.operations.event_log_keeper import maintain_event_log


class Command(BaseCommand):
    help = (
        "Create the event table's partitions for the coming days, drop the events older than EVENT_RETENTION_DAYS, "
        "and report the events in the default partition (--repair moves them into day partitions). Safe to run "
        "from cron at any interval, beside the servers (which do the same every hour). PostgreSQL only; on "
        "SQLite it only applies the retention."
    )

    def add_arguments(self, parser):
        parser.add_argument("--repair", action="store_true",
                            help="Move the events of the default partition into partitions of their own days.")

    def handle(self, *args, repair: bool = False, **options):
        report = maintain_event_log()
        if not report.ran:
            self.stdout.write("Another process is maintaining the event log right now; nothing done.")
            return
        if report.created:
            days = ", ".join(f"{day:%Y-%m-%d}" for day in report.created)
            self.stdout.write(f"Created {len(report.created)} day partitions: {days}.")
        elif is_partitioned(connection):
            self.stdout.write("Every partition of the coming days exists.")
        if report.retention_cutoff is not None:
            self.stdout.write(
                f"Retention: removed {report.pruned} events older than {report.retention_cutoff:%Y-%m-%d %H:%M} UTC; "
                "rollups kept."
            )
        if report.released:
            self.stdout.write(f"Dropped {report.released} detached day partitions (their disk space is free again).")
        if not is_partitioned(connection):
            return
        in_default = default_partition_report(connection)
        if not in_default.rows:
            self.stdout.write("The default partition is empty.")
            return
        days = ", ".join(f"{day:%Y-%m-%d}" for day in in_default.days)
        if not repair:
            self.stdout.write(self.style.WARNING(
                f"The default partition holds {in_default.rows} events, of these days: {days}. "
                "Run with --repair to move them into day partitions."
            ))
            return
        moved = repair_default_partition(connection)
        self.stdout.write(self.style.SUCCESS(f"Moved {moved} events from the default partition into day partitions: {days}."))
