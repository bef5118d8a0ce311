"""Rows sent to PostgreSQL as one JSON document per table, for the event writer's statement (usage/models/events.py).

``INSERT ... SELECT ... FROM json_populate_recordset(NULL::table, %s::json)`` takes one parameter whatever the number
of rows, so the statement's text is the same for a batch of 1 and of 500, and PostgreSQL keeps it prepared (parsed
and planned once per connection) where ``VALUES (...), (...)`` is a new statement for every batch size, parsed and
planned each time, with a parameter per value that psycopg quotes one by one (docs/PERFORMANCE.md, "The event
write, statement by statement"). The document is encoded by orjson (C), every string escaped by it; PostgreSQL
reads each value with its column's own input function, matched by the column's name, and the statement's types
never depend on the values (a NULL, a small or a large integer), so one prepared statement serves every batch.
"""

import json
from collections.abc import Sequence

import orjson
from django.db import models


def json_rows(rows: list[dict]) -> str:
    """The JSON document of ``rows`` (dicts of column name to value: str, int, float, bool, datetime, UUID or None).

    Text that PostgreSQL cannot hold (NUL, lone surrogates) never reaches here: ``ExecutionEvent.make_storable``
    replaces it. A value orjson refuses (an integer beyond 64 bits) is written by the standard library instead, and
    PostgreSQL then refuses it as it refuses any value out of its column's range: with a DatabaseError, as before
    these documents, which the event writer and the spool handle (that event logged, the rest of its batch stored).
    """
    try:
        return orjson.dumps(rows).decode()
    except orjson.JSONEncodeError:
        return json.dumps(rows, default=str)


def rows_from_json(model: type[models.Model], columns: Sequence[str], connection) -> str:
    """``SELECT <columns> FROM json_populate_recordset(NULL::<model's table>, %s::json)``: the rows of a ``json_rows``
    document as ``model``'s table types them (a key missing from a row is NULL there)."""
    quote = connection.ops.quote_name
    return (
        f"SELECT {','.join(map(quote, columns))} "
        f"FROM json_populate_recordset(NULL::{quote(model._meta.db_table)}, %s::json)"
    )
