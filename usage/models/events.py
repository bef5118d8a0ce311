"""The event log: one ExecutionEvent per execution, and the batch insert that adds events to the rollups."""

import functools
import math
import operator
import re
import uuid

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connection, connections, models, transaction
from django.utils import timezone

from usage.models.choices import EventSource, Outcome, UsageSource
from usage.models.json_rows import json_rows, rows_from_json
from usage.models.rollups import add_to_rollups, rollup_deltas, rollup_rows_json, rollup_upsert_sql, sorted_deltas

EVENTS_PER_STATEMENT = 500  # a statement's JSON (usage/models/json_rows.py) is under 1 KB an event
ERROR_MESSAGE_LIMIT = 4000
# Text neither database can store: lone UTF-16 surrogates (unencodable as UTF-8) and NUL (PostgreSQL refuses it).
UNSTORABLE_CHARACTERS = re.compile(r"[\x00\ud800-\udfff]")
INTEGER_LIMITS = {"PositiveIntegerField": 2_147_483_647, "PositiveSmallIntegerField": 32_767}


class ExecutionEventManager(models.Manager):
    def insert_batch(self, events: list["ExecutionEvent"]) -> list["ExecutionEvent"]:
        """Insert ``events`` and add them to the usage rollups, atomically.

        The one batch insert of events; executions reach it through ``usage.recording.writer.record_execution``.
        """
        if not events:
            return events
        for event in events:
            event.make_storable()
        if connection.vendor == "postgresql" and len(events) <= EVENTS_PER_STATEMENT:
            _insert_and_roll_up(events)
            return events
        with transaction.atomic(using=self.db):
            if connection.vendor == "postgresql":
                for start in range(0, len(events), EVENTS_PER_STATEMENT):
                    _insert_and_roll_up(events[start : start + EVENTS_PER_STATEMENT])
                return events
            created = self.bulk_create(events)
            add_to_rollups(rollup_deltas(created))
        return created


def _insert_and_roll_up(events: list["ExecutionEvent"]) -> None:
    """PostgreSQL: insert ``events`` and add them to the rollups in one statement, atomic on its own: one round trip
    to the database instead of four (BEGIN, the inserts, the upsert, COMMIT). It is what an execution waits for
    before it is answered, and the less the database and this thread do for it, the less the gateway adds
    (docs/PERFORMANCE.md, "The event write, statement by statement"): the rows go as one JSON document per table
    (usage/models/json_rows.py), so the statement is the same for every batch and PostgreSQL keeps it prepared on
    each connection (``prepared_cursor``, connectors_admin/postgresql/base.py): parsed and planned once, not per
    batch."""
    db = connections[DEFAULT_DB_ALIAS]  # the connection itself: the ``connection`` proxy costs a lookup per use
    with db.prepared_cursor() as cursor:
        cursor.execute(*write_statement(events, db))
        mark_stored(events, [row[0] for row in cursor.fetchall()], db.alias)


def mark_stored(events: list["ExecutionEvent"], ids: list[int], alias: str) -> None:
    """The events as Django knows rows it saved: their ids (in the order of ``events``), stored in ``alias``."""
    for event, pk in zip(events, ids, strict=True):
        event.pk = pk
        event._state.adding, event._state.db = False, alias


def mark_unstored(events: list["ExecutionEvent"]) -> None:
    """The events as not stored again, for a write that was rolled back (``bulk_create`` may have given them ids)
    or handed on to be written elsewhere."""
    for event in events:
        event.pk = None
        event._state.adding, event._state.db = True, None


def write_statement(events: list["ExecutionEvent"], db) -> tuple[str, list[str]]:
    """The statement of ``_insert_and_roll_up`` (and of the event loop's writer, usage/recording/loop_writer.py) and
    its two parameters, for events already made storable: the rollups' upsert in a data-modifying
    WITH (which PostgreSQL always runs), then the events' INSERT, returning their ids in the order of ``events``.
    Each value is as Django's ``get_db_prep_save`` gives it for its field, without the cost of the calls (some 90
    µs an event) where the value already has the type the field takes, which is nearly always."""
    rows = []
    for event in events:
        values = list(_read_event_values(event))
        for index in _to_convert(tuple(map(type, values))):
            field = _EVENT_FIELDS[index]
            values[index] = field.get_db_prep_save(field.pre_save(event, True), db)
        rows.append(dict(zip(_EVENT_COLUMNS, values, strict=True)))
    return _write_sql(db.vendor), [rollup_rows_json(sorted_deltas(rollup_deltas(events)), db), json_rows(rows)]


@functools.lru_cache(maxsize=256)
def _to_convert(value_types: tuple[type, ...]) -> tuple[int, ...]:
    """The positions (in ``_EVENT_FIELDS``) whose value needs ``get_db_prep_save``, for an event whose values have
    these types: worked out once per combination of types (a handful: nullable counts set or not), not per value."""
    return tuple(index for index, ((_field, ready), value_type) in enumerate(zip(_EVENT_FIELD_TYPES, value_types,
                                                                                strict=True))
                 if value_type not in ready)


@functools.lru_cache(maxsize=2)
def _write_sql(vendor: str) -> str:
    quote = connection.ops.quote_name
    return (
        f"WITH rollups AS ({rollup_upsert_sql(vendor, None)} RETURNING 1) "
        f"INSERT INTO {quote(ExecutionEvent._meta.db_table)} ({','.join(map(quote, _EVENT_COLUMNS))}) "
        f"{rows_from_json(ExecutionEvent, _EVENT_COLUMNS, connection)} "
        f"RETURNING {quote(ExecutionEvent._meta.pk.column)}"
    )


class ExecutionEvent(models.Model):
    """One execution of a connector, success or failure: Kibana's `execute` event with what it lacked."""

    timestamp = models.DateTimeField(default=timezone.now, help_text="When the execution started.")
    connector_id = models.CharField(max_length=64)
    connector_name = models.CharField(max_length=255, help_text="The connector's name at the time.")
    connector_is_preconfigured = models.BooleanField(default=False)
    # db_index=False on both keys: the composite indexes below start with them, and every index is written by each
    # recorded event. db_constraint=False on both (migration 0014): an event outlives its user and its API key, as
    # it outlives its space. A foreign key made the database refuse the event of a call whose user or key was
    # deleted while it ran (or while its event waited in the spool), so the execution went unrecorded; and it cost
    # every event a lookup of the user's and the key's rows, each locked for the commit (docs/PERFORMANCE.md, "The
    # event log's foreign keys"). Deleting a user or a key still empties these fields in their stored events
    # (SET_NULL, done by Django); an event committed after the deletion keeps the id, and pages name it by user_name
    # and show its key as deleted.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_index=False,
        db_constraint=False,
    )
    user_name = models.CharField(max_length=150, blank=True, help_text="The user (or API key owner) at the time.")
    source = models.CharField(max_length=16, choices=EventSource.choices)
    sub_action = models.CharField(max_length=32)
    outcome = models.CharField(max_length=8, choices=Outcome.choices)
    duration_ms = models.FloatField(default=0)
    upstream_status = models.PositiveSmallIntegerField(null=True, blank=True)
    requested_model = models.CharField(max_length=255, blank=True)
    response_model = models.CharField(max_length=255, blank=True)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    total_tokens = models.PositiveIntegerField(default=0)
    cached_tokens = models.PositiveIntegerField(null=True, blank=True)
    reasoning_tokens = models.PositiveIntegerField(null=True, blank=True)
    usage_source = models.CharField(max_length=16, choices=UsageSource.choices, default=UsageSource.NONE)
    error_message = models.TextField(blank=True)
    request_bytes = models.PositiveIntegerField(default=0)
    response_bytes = models.PositiveIntegerField(default=0)
    # Unique per event, given when the execution starts, like the timestamp: an event replayed from the spool
    # (usage/recording/spool.py) after a database outage is inserted only if this (uid, timestamp) is not stored yet,
    # so a replay never counts an event twice. Unique with the timestamp (constraint event_uid_time): a partitioned
    # table's unique keys must hold its partition key (usage/models/partitions.py), and a spooled event keeps both.
    uid = models.UUIDField(default=uuid.uuid4, null=True, editable=False)
    api_key = models.ForeignKey(
        "connectors.ApiKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_index=False,
        db_constraint=False, help_text="The API key the call was made with, if any.",
    )
    cost_nanos = models.BigIntegerField(
        null=True, blank=True,
        help_text="What the call cost, in billionths of USAGE_CURRENCY, at the price of its day (empty: no price "
        "applies to its model). Estimated when its tokens are (usage_source).",
    )
    # The space the call was made in (README "Spaces"): the connector's, or for a preconfigured connector (in
    # every space) the space of the URL. Plain text, no foreign key: an event outlives its space. No index of its
    # own: every query of a space's events also names a connector, a user or an API key, and a time range, whose
    # indexes below serve it (migration 0011).
    space_id = models.CharField(max_length=64, default="default")

    objects = ExecutionEventManager()

    class Meta:
        app_label = "usage"
        ordering = ["-timestamp"]
        default_permissions = ("view",)
        permissions = [("view_usage_dashboard", "Can view token usage dashboards")]
        constraints = [models.UniqueConstraint(fields=["uid", "timestamp"], name="event_uid_time")]
        indexes = [
            # The Logs tab's keyset pagination (usage/dashboards/logs.py): one connector, a range, ORDER BY timestamp DESC,
            # id DESC, the page after (timestamp, id) of the last row shown. Also what the raw-event CSV export
            # and the admin read (one connector, a time range).
            models.Index(fields=["connector_id", "timestamp", "id"], name="event_connector_time_id"),
            # The same for a user who sees only their own calls (no usage.view_usage_dashboard).
            models.Index(fields=["user", "connector_id", "timestamp", "id"], name="event_user_connector_time"),
            # prune_usage_events: everything older than a cut-off.
            models.Index(fields=["timestamp"], name="event_time"),
            # "My usage" (usage/dashboards/my_usage.py): one user's events in a range, across connectors, grouped
            # by connector and API key: WHERE user_id = %s AND timestamp >= %s AND timestamp < %s.
            models.Index(fields=["user", "timestamp"], name="event_user_time"),
            # What the event log holds for a budget of one API key (recorded_in_period in
            # usage/governance/pages/consumption.py): one key's events in a period. The dashboards sliced by key
            # read the rollups (usage/models/rollups.py: rollup_api_key_bucket).
            models.Index(fields=["api_key", "timestamp"], name="event_api_key_time"),
        ]

    def __str__(self) -> str:
        return f"{self.connector_name} {self.sub_action} {self.outcome} at {self.timestamp:%Y-%m-%d %H:%M:%S}"

    @classmethod
    def opened(cls, **values) -> "ExecutionEvent":
        """``ExecutionEvent(**values)``, the same instance, in a quarter of the time: each execution makes one,
        and ``Model.__init__`` walks all 28 fields with a lookup and a ``setattr`` each (about 40 µs, a twentieth of
        a call's CPU: docs/PERFORMANCE.md, "Where a call's CPU goes"). The defaults are copied, ``values`` set
        through the model's descriptors (a foreign key's object sets its id and its cache). This model sends no
        ``pre_init`` or ``post_init`` receivers anything (tests/recording/test_event_opened.py)."""
        event = cls.__new__(cls)
        event._state = models.base.ModelState()
        attributes = event.__dict__
        attributes.update(_STATIC_DEFAULTS)
        for attname, default in _CALLED_DEFAULTS:
            attributes[attname] = default()
        for name, value in values.items():
            setattr(event, name, value)
        return event

    @property
    def model(self) -> str:
        return self.response_model or self.requested_model

    def make_storable(self) -> None:
        """Make every field storable on SQLite and PostgreSQL, whatever a caller or a provider sent.

        Lone surrogates and NUL become U+FFFD, text is cut to its column's length, counts are bounded to their
        column's range. Idempotent and cheap (one pass over the text fields when they are plain ASCII, the usual
        case): insert_batch, the only way events reach the database, runs it on every event.
        """
        texts = _read_texts(self)
        plain = all(isinstance(value, str) for value in texts)
        if plain:
            joined = "".join(texts)
            plain = joined.isascii() and "\x00" not in joined
        for (name, limit), value in zip(_TEXT_LIMITS, texts, strict=True):
            if not plain:
                value = UNSTORABLE_CHARACTERS.sub("\ufffd", "" if value is None else str(value))
                setattr(self, name, value[:limit])
            elif len(value) > limit:
                setattr(self, name, value[:limit])
        self.total_tokens = self.total_tokens or (self.prompt_tokens + self.completion_tokens)
        for name, limit in _INTEGER_LIMITS:
            value = getattr(self, name)
            if value is not None and not 0 <= value <= limit:
                setattr(self, name, min(max(int(value), 0), limit))
        if not math.isfinite(self.duration_ms):
            self.duration_ms = 0.0


_EVENT_FIELDS = tuple(field for field in ExecutionEvent._meta.concrete_fields if not field.primary_key)
_EVENT_COLUMNS = tuple(field.column for field in _EVENT_FIELDS)
_read_event_values = operator.attrgetter(*(field.attname for field in _EVENT_FIELDS))
# The types a field's value is stored as it is (what get_db_prep_save would give for it, to the JSON of
# usage/models/json_rows.py): any other value, and every value of a field not listed (the timestamp: a naive one is
# made aware), goes through get_db_prep_save.
_READY_TYPES = {
    "CharField": (str,), "TextField": (str,), "BooleanField": (bool,), "FloatField": (float,), "UUIDField": (uuid.UUID,),
    **dict.fromkeys(("AutoField", "BigAutoField", "IntegerField", "SmallIntegerField", "BigIntegerField",
                     "PositiveIntegerField", "PositiveSmallIntegerField"), (int,)),
}
_EVENT_FIELD_TYPES = tuple(
    (field, frozenset(_READY_TYPES.get((field.target_field if field.is_relation else field).get_internal_type(), ())
                      + ((type(None),) if field.null else ())))
    for field in _EVENT_FIELDS
)
# ExecutionEvent.opened: each field's default, as Model.__init__ gives it (a callable's called per event).
_CALLED_DEFAULTS = tuple((field.attname, field.default) for field in ExecutionEvent._meta.concrete_fields
                         if field.has_default() and callable(field.default))
_STATIC_DEFAULTS = {field.attname: field.get_default() for field in ExecutionEvent._meta.concrete_fields
                    if field.attname not in dict(_CALLED_DEFAULTS)}
_TEXT_LIMITS = tuple(
    (field.attname, field.max_length or ERROR_MESSAGE_LIMIT)
    for field in ExecutionEvent._meta.concrete_fields
    if isinstance(field, (models.CharField, models.TextField))
)
_read_texts = operator.attrgetter(*(name for name, _limit in _TEXT_LIMITS))
_INTEGER_LIMITS = tuple(
    (field.attname, INTEGER_LIMITS[field.get_internal_type()])
    for field in ExecutionEvent._meta.concrete_fields
    if field.get_internal_type() in INTEGER_LIMITS
)
