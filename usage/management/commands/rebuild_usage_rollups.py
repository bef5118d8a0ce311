from django.core.management.base import BaseCommand, CommandError

from usage.operations.maintenance import DEFAULT_CHUNK, parse_age, rebuild_rollups


class Command(BaseCommand):
    help = (
        "Recompute the usage rollups from the raw events, one chunk of time per transaction. Rollups older than "
        "the oldest event (their events were pruned) are kept."
    )

    def add_arguments(self, parser):
        parser.add_argument("--connector", help="Rebuild only this connector id.")
        parser.add_argument("--chunk", default="1d", help="How much time each transaction covers (default 1d; e.g. 6h).")

    def handle(self, *args, connector=None, chunk="1d", **options):
        try:
            chunk_size = parse_age(chunk) if chunk else DEFAULT_CHUNK
        except ValueError as exc:
            raise CommandError(f"--chunk: {exc}") from None
        verbose = options["verbosity"] >= 2

        def progress(start, end, rows):
            if verbose:
                self.stdout.write(f"  {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC: {rows} rollup rows")

        result = rebuild_rollups(connector_id=connector, chunk=chunk_size, progress=progress)
        if result.start is None:
            self.stdout.write("No events to rebuild from; the rollups were left as they are.")
            return
        self.stdout.write(
            self.style.SUCCESS(
                f"Rebuilt {result.rollup_rows} rollup rows from {result.events} events since "
                f"{result.start:%Y-%m-%d %H:%M} UTC in {result.chunks} chunks."
            )
        )
