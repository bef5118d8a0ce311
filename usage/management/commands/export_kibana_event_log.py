"""Write the event log as Kibana event-log documents for Elasticsearch's _bulk API (README, Kibana event log export).

    python manage.py export_kibana_event_log --from 2026-01-01T00:00:00Z --to 2026-02-01T00:00:00Z \\
        [--connector ID] [--cursor C | --cursor-file PATH] [--limit N] [--output FILE]

The next cursor goes to standard error and, with ``--cursor-file PATH``, into ``PATH.next``: move it over PATH once
the batch has been accepted by Elasticsearch, so that a failed upload is sent again by the next run.
"""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from usage.operations import kibana_event_log


class Command(BaseCommand):
    help = "Export execution events as Kibana event-log (.kibana-event-log-*) documents in _bulk NDJSON."

    def add_arguments(self, parser):
        parser.add_argument("--from", dest="from_", required=True, help="start (inclusive), ISO 8601")
        parser.add_argument("--to", required=True, help="end (exclusive), ISO 8601")
        parser.add_argument("--connector", default="", help="only this connector's events")
        cursor = parser.add_mutually_exclusive_group()
        cursor.add_argument("--cursor", default="", help="resume after this cursor (X-Next-Cursor of the API)")
        cursor.add_argument("--cursor-file", help="read the cursor from this file (if it exists); write the next "
                                                  "one to <file>.next")
        parser.add_argument("--limit", default=str(kibana_event_log.MAX_LIMIT),
                            help=f"at most this many events (default and maximum {kibana_event_log.MAX_LIMIT})")
        parser.add_argument("--output", help="write here instead of standard output")

    def handle(self, *args, from_, to, connector, cursor, cursor_file, limit, output, **options):
        if cursor_file and Path(cursor_file).is_file():
            cursor = Path(cursor_file).read_text().strip()
        params = {"from": from_, "to": to, "connector": connector, "cursor": cursor, "limit": limit}
        try:
            page = kibana_event_log.plan_page(params)
        except kibana_event_log.ExportError as exc:
            raise CommandError(str(exc)) from None
        stream = open(output, "w", encoding="utf-8") if output else self.stdout  # noqa: SIM115 - closed below
        try:
            for lines in kibana_event_log.ndjson(page):
                stream.write(lines, ending="") if stream is self.stdout else stream.write(lines)
        finally:
            if output:
                stream.close()
        if cursor_file:
            Path(cursor_file + ".next").write_text(page.next_cursor + "\n")
        self.stderr.write(f"next cursor: {page.next_cursor}\ncomplete: {'true' if page.complete else 'false'}")
