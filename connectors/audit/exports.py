"""CSV and JSON exports of the filtered trail, streamed: rows are read from the database in chunks and written as
they come, so an export of millions of records does not sit in memory. Each format has a synchronous and an
asynchronous generator: the iterator must match the server (ASGI or WSGI), or Django reads it whole first.
"""

import csv
import json

from django.core.serializers.json import DjangoJSONEncoder

COLUMNS = ("id", "at", "actor", "actor_user_id", "api_key_id", "api_key_name", "via", "client_ip", "user_agent",
           "object_type", "object_id", "object_repr", "action", "changes", "space_id")
CHUNK = 2000


class _Echo:
    def write(self, value):
        return value


_writer = csv.writer(_Echo())


def _row(record) -> dict:
    row = {name: getattr(record, name) for name in COLUMNS}
    row["at"] = record.at.isoformat()
    return row


def _csv_line(record) -> str:
    row = _row(record)
    row["changes"] = json.dumps(row["changes"], cls=DjangoJSONEncoder, ensure_ascii=False)
    # Spreadsheet formula injection: a cell starting with = + - @ is made text.
    return _writer.writerow(
        ["'" + v if isinstance(v, str) and v[:1] in ("=", "+", "-", "@") else v for v in row.values()]
    )


def _json_item(record, first: bool) -> str:
    return ("" if first else ",\n") + json.dumps(_row(record), cls=DjangoJSONEncoder, ensure_ascii=False)


def csv_lines(records):
    yield _writer.writerow(COLUMNS)
    for record in records.iterator(chunk_size=CHUNK):
        yield _csv_line(record)


async def acsv_lines(records):
    yield _writer.writerow(COLUMNS)
    async for record in records.aiterator(chunk_size=CHUNK):
        yield _csv_line(record)


def json_chunks(records):
    yield "["
    for position, record in enumerate(records.iterator(chunk_size=CHUNK)):
        yield _json_item(record, position == 0)
    yield "]\n"


async def ajson_chunks(records):
    yield "["
    first = True
    async for record in records.aiterator(chunk_size=CHUNK):
        yield _json_item(record, first)
        first = False
    yield "]\n"
