from django.core.management.base import BaseCommand, CommandError

from usage.governance.pricing.repricing import reprice
from usage.ranges import InvalidRange, parse_moment, parse_tz


class Command(BaseCommand):
    help = (
        "Recompute the stored cost of every execution in a range with the current price table (each at the price "
        "of its day), then rebuild the usage rollups of that range. Run it after correcting a price; running it "
        "twice changes nothing the second time. Dates are UTC; --to DATE includes that whole day."
    )

    def add_arguments(self, parser):
        parser.add_argument("--from", dest="start", required=True, help="First day (or ISO date-time), e.g. 2026-11-01.")
        parser.add_argument("--to", dest="end", required=True, help="Last day, included (or an ISO date-time, excluded).")
        parser.add_argument("--connector", help="Reprice only this connector id.")

    def handle(self, *args, start, end, connector=None, **options):
        utc = parse_tz("UTC")
        try:
            since = parse_moment("from", start, utc, end_of_day=False)
            until = parse_moment("to", end, utc, end_of_day=True)
        except InvalidRange as exc:
            raise CommandError(str(exc).replace("[from]", "--from").replace("[to]", "--to")) from None
        if since >= until:
            raise CommandError("--from must be before --to.")
        result = reprice(since, until, connector_id=connector)
        self.stdout.write(self.style.SUCCESS(
            f"Repriced {result.events} events from {result.start:%Y-%m-%d %H:%M} to {result.end:%Y-%m-%d %H:%M} UTC"
            f"{f' of connector {connector}' if connector else ''}: {result.changed} costs changed; "
            f"{result.rollup_rows} rollup rows rebuilt."
        ))
