"""Counters shared by every server process and host: what budgets and rate limits have used.

Two stores, chosen by REDIS_URL (README, "Budgets and rate limits"): Redis when it is set (one round trip per
execution, a Lua script that checks every counter and adds to all of them atomically), else the database
(``governance.Counter`` rows, checked and added to in one transaction with the rows locked). The embedded SQLite
default therefore needs no server; PostgreSQL and Redis both hold across processes and hosts.

The admission rule is the same in both: a charge is refused when its counter is already at its limit (for
``must_fit`` charges, such as one request against requests-per-minute or a budget's reservation: when adding it
would pass the limit); when any charge of an execution is refused, none is added. Once admitted, amounts are settled later by ``add`` (the
provider's usage minus the reservation), so a counter can end above its limit by what executions already admitted
used beyond their reservations, and never by more.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import threading
from typing import NamedTuple

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from connectors.database_threads import in_a_worker_thread
from connectors.event_loops import PerEventLoop
from usage.governance.enforcement.redis_pipeline import PipelinedRedis, RedisReplyError, frame, pack


class Refused(NamedTuple):
    """The first charge of a reservation that was refused, and the value its counter held."""

    index: int
    value: int


class Charge(NamedTuple):
    """An amount to add to a counter, if the counter's limit allows it (a tuple: an execution makes several)."""

    key: str
    amount: int
    limit: int
    expires_at: dt.datetime
    must_fit: bool = False  # refused when value + amount > limit (else: when value >= limit)

    def refuses(self, value: int) -> bool:
        return value + self.amount > self.limit if self.must_fit else value >= self.limit


class ChargeTerms(NamedTuple):
    """A charge but its amount: the counter, its limit and expiry, which an admission plan keeps for a window
    (usage/governance/enforcement/admission.py) while each execution brings its amounts."""

    key: str
    limit: int
    expires_at: dt.datetime
    must_fit: bool


class DatabaseStore:
    """Counters in the ``governance_counter`` table.

    On SQLite the process's threads take turns (a lock): SQLite has one writer at a time anyway, and its shared-cache
    test database answers "table is locked" instead of waiting. Other processes wait on the busy timeout.
    """

    def __init__(self):
        self._sqlite_lock = threading.Lock()

    def _serialised(self):
        return self._sqlite_lock if connection.vendor == "sqlite" else contextlib.nullcontext()

    async def reserve(self, charges: list[Charge]) -> Refused | None:
        return await in_a_worker_thread(self.reserve_now)(charges)

    def prepare(self, terms: list[ChargeTerms]) -> list[ChargeTerms]:
        """``terms`` in the form ``reserve_prepared`` takes (here: as they are)."""
        return terms

    async def reserve_prepared(self, prepared: list[ChargeTerms], amounts: list[int]) -> Refused | None:
        """``reserve`` of the charges of ``prepare``'s terms with these amounts, in order."""
        return await self.reserve([Charge(t.key, amount, t.limit, t.expires_at, t.must_fit)
                                   for t, amount in zip(prepared, amounts, strict=True)])

    async def add(self, amounts: list[tuple[str, int, dt.datetime]]) -> dict[str, int]:
        return await in_a_worker_thread(self.add_now)(amounts)

    def reserve_now(self, charges: list[Charge]) -> Refused | None:
        """The first refused charge, or None when all were added."""
        from usage.governance.models import Counter

        try:
            with self._serialised(), transaction.atomic():
                Counter.objects.bulk_create(
                    [Counter(key=c.key, value=0, expires_at=c.expires_at) for c in charges], ignore_conflicts=True
                )
                # Locked in key order, so two executions sharing counters cannot deadlock (SQLite's IMMEDIATE
                # transactions serialise writers already).
                keys = sorted({c.key for c in charges})
                values = dict(Counter.objects.select_for_update().filter(key__in=keys).values_list("key", "value"))
                for index, charge in enumerate(charges):
                    if charge.refuses(values.get(charge.key, 0)):
                        return Refused(index, values.get(charge.key, 0))
                for charge in charges:
                    if charge.amount:
                        Counter.objects.filter(key=charge.key).update(value=F("value") + charge.amount)
                return None
        finally:
            if not connection.in_atomic_block:
                connection.close_if_unusable_or_obsolete()

    def add_now(self, amounts: list[tuple[str, int, dt.datetime]]) -> dict[str, int]:
        from usage.governance.models import Counter

        with self._serialised(), transaction.atomic():
            Counter.objects.bulk_create(
                [Counter(key=key, value=0, expires_at=expires) for key, _, expires in amounts], ignore_conflicts=True
            )
            for key, amount, _ in amounts:
                if amount:
                    Counter.objects.filter(key=key).update(value=F("value") + amount)
            return dict(Counter.objects.filter(key__in=[key for key, _, _ in amounts]).values_list("key", "value"))

    def values_now(self, keys: list[str]) -> dict[str, int]:
        from usage.governance.models import Counter

        return dict(Counter.objects.filter(key__in=keys).values_list("key", "value"))

    def prune_now(self) -> int:
        from usage.governance.models import Counter

        return Counter.objects.filter(expires_at__lt=timezone.now()).delete()[0]




# KEYS: the counters. ARGV: for each, its limit, must_fit (1/0) and expiry (unix seconds); then each one's amount
# (last, so that the rest of the command is the same for every execution of a window: RedisStore.prepare).
# Returns 0 when every charge was added, else the 1-based index of the first refused one and its counter's value.
_RESERVE = """
local n = #KEYS
for i, key in ipairs(KEYS) do
  local b = (i - 1) * 3
  local value = tonumber(redis.call('GET', key) or '0')
  local amount, limit = tonumber(ARGV[3 * n + i]), tonumber(ARGV[b + 1])
  if (ARGV[b + 2] == '1' and value + amount > limit) or (ARGV[b + 2] ~= '1' and value >= limit) then
    return {i, value}
  end
end
for i, key in ipairs(KEYS) do
  redis.call('INCRBY', key, ARGV[3 * n + i])
  redis.call('EXPIREAT', key, ARGV[(i - 1) * 3 + 3])
end
return 0
"""

_ADD = """
local values = {}
for i, key in ipairs(KEYS) do
  values[i] = redis.call('INCRBY', key, ARGV[(i - 1) * 2 + 1])
  redis.call('EXPIREAT', key, ARGV[(i - 1) * 2 + 2])
end
return values
"""


_RESERVE_SHA = hashlib.sha1(_RESERVE.encode()).hexdigest()
_ADD_SHA = hashlib.sha1(_ADD.encode()).hexdigest()


class PreparedReserve(NamedTuple):
    command: bytes  # EVALSHA of the admission script, its counters, their limits and expiries, framed
    arguments: tuple  # the same after the script (for EVAL when Redis does not have it)


class RedisStore:
    """Counters in Redis, under ``<prefix>:``; each expires with its period. The execution path's two scripts go
    through one pipelined connection per event loop (usage/governance/enforcement/redis_pipeline.py)."""

    def __init__(self, url: str, prefix: str = "connectors-admin:governance"):
        self.url = url
        self.prefix = prefix
        # Connections belong to the event loop that opened them.
        self._connections: PerEventLoop[PipelinedRedis] = PerEventLoop(lambda: PipelinedRedis(url))

    def _connection(self) -> PipelinedRedis:
        return self._connections.get()

    async def _run_script(self, script: str, evalsha: bytes, arguments):
        """``evalsha``: the framed EVALSHA of ``script`` with ``arguments`` (its number of keys, keys and values)."""
        connection = self._connection()
        try:
            return await connection.execute_framed(evalsha)
        except RedisReplyError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
            # Not in this Redis's script cache yet (a new or restarted server): EVAL sends it, and caches it.
            return await connection.execute("EVAL", script, *arguments)

    def _key(self, key: str) -> str:
        return f"{self.prefix}:{key}"

    async def reserve(self, charges: list[Charge]) -> Refused | None:
        return await self.reserve_prepared(self.prepare([ChargeTerms(c.key, c.limit, c.expires_at, c.must_fit)
                                                         for c in charges]), [c.amount for c in charges])

    def prepare(self, terms: list[ChargeTerms]) -> PreparedReserve:
        """The admission script's command for these counters, framed but for the amounts, which come last."""
        arguments: list = [len(terms), *(self._key(t.key) for t in terms)]
        for t in terms:
            arguments += [t.limit, 1 if t.must_fit else 0, int(t.expires_at.timestamp()) + 1]
        count = 2 + len(arguments) + len(terms)
        return PreparedReserve(b"*%d\r\n" % count + frame("EVALSHA", _RESERVE_SHA, *arguments), tuple(arguments))

    async def reserve_prepared(self, prepared: PreparedReserve, amounts: list[int]) -> Refused | None:
        refused = await self._run_script(_RESERVE, prepared.command + frame(*amounts), (*prepared.arguments, *amounts))
        if not isinstance(refused, list):  # 0: every charge was added
            return None
        return Refused(int(refused[0]) - 1, int(refused[1]))

    async def add(self, amounts: list[tuple[str, int, dt.datetime]]) -> dict[str, int]:
        arguments: list = [len(amounts), *(self._key(key) for key, _, _ in amounts)]
        for _, amount, expires_at in amounts:
            arguments += [amount, int(expires_at.timestamp()) + 1]
        values = await self._run_script(_ADD, pack("EVALSHA", _ADD_SHA, *arguments), arguments)
        return {key: int(value) for (key, _, _), value in zip(amounts, values, strict=True)}

    def values_now(self, keys: list[str]) -> dict[str, int]:
        import redis

        client = redis.Redis.from_url(self.url, socket_timeout=5, socket_connect_timeout=2)
        try:
            values = client.mget([self._key(key) for key in keys]) if keys else []
        finally:
            client.close()
        return {key: int(value) for key, value in zip(keys, values, strict=True) if value is not None}

    def prune_now(self) -> int:
        return 0  # Redis expires counters itself


_store = None


def counter_store() -> DatabaseStore | RedisStore:
    """The store REDIS_URL chooses, made once per process."""
    global _store
    if _store is None:
        _store = RedisStore(settings.REDIS_URL) if settings.REDIS_URL else DatabaseStore()
    return _store


def reset_counter_store() -> None:
    """Forget the store (tests that switch REDIS_URL)."""
    global _store
    _store = None
