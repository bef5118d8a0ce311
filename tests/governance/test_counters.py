"""Budgets and rate limits: the shared counters and the admission rule, on the database store and on Redis."""

import asyncio
import datetime as dt
import uuid
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.db import connection
from django.test import override_settings

from tests.environment import redis_test_url  # noqa: E402
from usage.governance.enforcement import admission
from usage.governance.enforcement.counters import Charge, DatabaseStore, RedisStore, counter_store, reset_counter_store
from usage.governance.enforcement.periods import minute_bounds, period_bounds
from usage.governance.models import Budget, Period, RateLimit, Scope, Unit

REDIS_URL = redis_test_url()
# Counter expiries reach Redis, whose clock is the real one: every time given to a store is relative to now.
LATER = dt.datetime.now(dt.UTC) + dt.timedelta(days=365)


def redis_available() -> bool:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
        return True
    except redis.RedisError:
        return False


@pytest.fixture(params=["database", "redis"])
def store(request):
    if request.param == "redis":
        if not redis_available():
            pytest.fail("Redis is expected at 127.0.0.1:6379 (it runs on every machine of this project)")
        return RedisStore(REDIS_URL, prefix=f"test:{uuid.uuid4().hex}")
    request.getfixturevalue("transactional_db")
    return DatabaseStore()


def test_period_bounds_follow_the_calendar_of_the_time_zone():
    at = dt.datetime(2026, 3, 31, 23, 30, tzinfo=dt.UTC)  # already April 1st in Paris
    start, end = period_bounds(Period.MONTH, "Europe/Paris", at)
    assert (start.isoformat(), end.isoformat()) == ("2026-04-01T00:00:00+02:00", "2026-05-01T00:00:00+02:00")
    start, end = period_bounds(Period.WEEK, "UTC", dt.datetime(2026, 11, 29, 12, tzinfo=dt.UTC))  # a Sunday
    assert (start.date().isoformat(), end.date().isoformat()) == ("2026-11-23", "2026-11-30")
    start, end = period_bounds(Period.DAY, "America/New_York", dt.datetime(2026, 3, 8, 12, tzinfo=dt.UTC))
    assert end.astimezone(dt.UTC) - start.astimezone(dt.UTC) == dt.timedelta(hours=23)  # the day clocks go forward
    assert minute_bounds(dt.datetime(2026, 1, 1, 10, 5, 59, 999, tzinfo=dt.UTC))[1].minute == 6


def test_counter_keys_kept_for_a_window_follow_the_time_asked_and_the_rule_as_edited():
    """The keys are kept per rule until the window ends: asking for another period, minute, zone or period kind
    (a budget edited in place) gives that window's keys, never the kept ones."""
    budget = Budget(pk=987654, period=Period.MONTH, time_zone="Europe/Paris")
    november = dt.datetime(2026, 11, 30, 22, 59, tzinfo=dt.UTC)  # 23:59 in Paris
    december = dt.datetime(2026, 11, 30, 23, 1, tzinfo=dt.UTC)  # already December there
    assert admission.budget_counter_key(budget, november)[0] == "budget:987654:2026-11-01"
    assert admission.budget_counter_key(budget, december)[0] == "budget:987654:2026-12-01"
    assert admission.budget_counter_key(budget, november)[0] == "budget:987654:2026-11-01"  # back in the past
    budget.time_zone = "UTC"
    assert admission.budget_counter_key(budget, december)[0] == "budget:987654:2026-11-01"
    budget.period = Period.DAY
    key, start, end = admission.budget_counter_key(budget, december)
    assert (key, start.isoformat(), end.isoformat()) == (
        "budget:987654:2026-11-30", "2026-11-30T00:00:00+00:00", "2026-12-01T00:00:00+00:00")

    limit = RateLimit(pk=987654)
    assert admission.rate_limit_counter_keys(limit, november)[:2] == ("rpm:987654:20261130T2259",
                                                                      "tpm:987654:20261130T2259")
    assert admission.rate_limit_counter_keys(limit, november + dt.timedelta(seconds=59))[0] == "rpm:987654:20261130T2259"
    assert admission.rate_limit_counter_keys(limit, december)[0] == "rpm:987654:20261130T2301"
    assert admission.rate_limit_counter_keys(limit, november)[2] == dt.datetime(2026, 11, 30, 23, 0, tzinfo=dt.UTC)


def test_a_must_fit_charge_admits_exactly_the_limit(store):
    async def run():
        results = await asyncio.gather(*(store.reserve([Charge("rpm", 1, 5, LATER, must_fit=True)]) for _ in range(12)))
        return results

    results = asyncio.run(run()) if isinstance(store, RedisStore) else [
        store.reserve_now([Charge("rpm", 1, 5, LATER, must_fit=True)]) for _ in range(12)
    ]
    assert results.count(None) == 5
    assert results.count((0, 5)) == 7  # the first charge, refused: its counter held 5


def test_a_refused_execution_adds_to_no_counter(store):
    charges = [Charge("a", 10, 100, LATER), Charge("b", 1, 0, LATER, must_fit=True)]
    refused = asyncio.run(store.reserve(charges)) if isinstance(store, RedisStore) else store.reserve_now(charges)
    assert refused == (1, 0)
    assert store.values_now(["a", "b"]).get("a", 0) == 0


def test_token_counters_admit_until_the_limit_is_reached_then_settle(store):
    async def run():
        first = await store.reserve([Charge("t", 60, 100, LATER)])
        second = await store.reserve([Charge("t", 60, 100, LATER)])  # 60 < 100: admitted, now 120
        third = await store.reserve([Charge("t", 1, 100, LATER)])  # 120 >= 100: refused
        values = await store.add([("t", -50, LATER)])  # the second used 10 tokens, not 60
        fourth = await store.reserve([Charge("t", 1, 100, LATER)])  # 70 < 100: admitted
        return first, second, third, values, fourth

    if isinstance(store, DatabaseStore):
        from asgiref.sync import async_to_sync

        first, second, third, values, fourth = async_to_sync(run)()
    else:
        first, second, third, values, fourth = asyncio.run(run())
    assert (first, second, third, fourth) == (None, None, (0, 120), None)
    assert values == {"t": 70}


@pytest.mark.django_db(transaction=True)
def test_the_database_store_admits_exactly_the_limit_from_many_threads():
    store = DatabaseStore()

    def one(_):
        try:
            return store.reserve_now([Charge("rpm-threads", 1, 25, LATER, must_fit=True)])
        finally:
            connection.close()

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(100)))
    assert results.count(None) == 25
    assert store.values_now(["rpm-threads"]) == {"rpm-threads": 25}


def test_redis_admits_exactly_the_limit_from_many_clients():
    if not redis_available():
        pytest.fail("Redis is expected at 127.0.0.1:6379")
    prefix = f"test:{uuid.uuid4().hex}"

    def one_loop(_):
        store = RedisStore(REDIS_URL, prefix=prefix)

        async def burst():
            return await asyncio.gather(
                *(store.reserve([Charge("rpm", 1, 37, LATER, must_fit=True)]) for _ in range(25))
            )

        return asyncio.run(burst())

    with ThreadPoolExecutor(4) as pool:  # four event loops, four connection pools: as four processes would
        results = [r for batch in pool.map(one_loop, range(4)) for r in batch]
    assert results.count(None) == 37


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("redis_url", ["", REDIS_URL], ids=["database", "redis"])
def test_admission_refuses_with_a_message_that_names_the_budget_and_its_reset(django_user_model, redis_url):
    if redis_url:
        if not redis_available():
            pytest.fail("Redis is expected at 127.0.0.1:6379")
        import redis

        redis.Redis.from_url(REDIS_URL).flushdb()  # database 15 is the tests' own; ids restart in every test run
    user = django_user_model.objects.create_user("bea")
    connector_id = f"c-{uuid.uuid4().hex[:8]}"
    Budget.objects.create(name="Team tokens", scope=Scope.CONNECTOR, connector_id=connector_id, period=Period.DAY,
                          time_zone="Europe/Paris", unit=Unit.TOKENS, amount=Decimal(1000), completion_allowance=500)
    # Half an hour before the next midnight in Paris, on the real clock: Redis expires the counter at that midnight
    # by its own clock, so a fixed date in the past would drop the counter at once.
    paris = ZoneInfo("Europe/Paris")
    midnight = dt.datetime.combine(dt.datetime.now(paris).date() + dt.timedelta(days=1), dt.time(), tzinfo=paris)
    at = midnight.astimezone(dt.UTC) - dt.timedelta(minutes=30)
    with override_settings(REDIS_URL=redis_url):
        reset_counter_store()
        try:
            from asgiref.sync import async_to_sync

            admit = async_to_sync(admission.admit)
            # No cap from the caller: its prompt (400 bytes / 4) and the budget's completion allowance.
            first = admit(connector_id, user.pk, None, request_bytes=400, at=at)
            assert isinstance(first, admission.Reservation) and first.estimated_tokens == 100
            assert [c.amount for c in first.token_charges] == [600]
            # 400 tokens are left: another 600 do not fit.
            refused = admit(connector_id, user.pk, None, request_bytes=400, at=at)
            assert isinstance(refused, admission.Refusal) and refused.kind == "budget"
            assert refused.message.startswith(f'Budget "Team tokens" (connector {connector_id}) has 400 tokens left '
                                              f"of 1000 tokens for this calendar day; this call reserves 600 tokens "
                                              f"(its prompt and the budget's completion allowance of 500 tokens")
            assert refused.message.endswith(f"It resets at {midnight.isoformat()}.")
            assert refused.retry_after == 30 * 60
            # A call whose max_tokens fits in what is left is admitted, to the last token.
            exact = admit(connector_id, user.pk, None, request_bytes=400, completion_cap=300, at=at)
            assert [c.amount for c in exact.token_charges] == [400]
            used_up = admit(connector_id, user.pk, None, request_bytes=4, completion_cap=1, at=at)
            assert isinstance(used_up, admission.Refusal)
            assert f'Budget "Team tokens" (connector {connector_id}) is used up for this calendar day' in used_up.message
            # Settling with the actual usage frees what was reserved and not used.
            async_to_sync(admission.settle)(first, total_tokens=40, cost=None)
            again = admit(connector_id, user.pk, None, request_bytes=4, completion_cap=559, at=at)
            assert isinstance(again, admission.Reservation)
        finally:
            reset_counter_store()


@pytest.mark.django_db(transaction=True)
def test_rules_for_other_subjects_cost_nothing(django_user_model):
    RateLimit.objects.create(scope=Scope.CONNECTOR, connector_id="limited", requests_per_minute=1)
    from asgiref.sync import async_to_sync

    assert async_to_sync(admission.admit)("free", None, None, request_bytes=10) is admission.NOTHING_RESERVED
    assert isinstance(async_to_sync(admission.admit)("limited", None, None, request_bytes=10), admission.Reservation)
    refused = async_to_sync(admission.admit)("limited", None, None, request_bytes=10)
    assert isinstance(refused, admission.Refusal) and refused.kind == "rate_limit"
    assert refused.message == "Rate limit reached: 1 requests per minute for connector limited."
    assert 1 <= refused.retry_after <= 60


@pytest.mark.django_db(transaction=True)
def test_a_kept_admission_plan_follows_the_minute_the_rules_and_the_store():
    """What an admission needs but the amounts is kept per subject for its window (``admission._plan_for``): a
    call in the next minute counts against that minute's counter, an edited rule applies at once, and a plan made
    for one counter store is not used with another."""
    from asgiref.sync import async_to_sync

    admit = async_to_sync(admission.admit)
    limit = RateLimit.objects.create(scope=Scope.CONNECTOR, connector_id="kept", requests_per_minute=1)
    minute = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0) + dt.timedelta(minutes=5)
    with override_settings(REDIS_URL=""):
        reset_counter_store()
        try:
            assert isinstance(admit("kept", None, None, request_bytes=10, at=minute), admission.Reservation)
            assert isinstance(admit("kept", None, None, request_bytes=10, at=minute + dt.timedelta(seconds=59)),
                              admission.Refusal)
            next_minute = minute + dt.timedelta(minutes=1)
            assert isinstance(admit("kept", None, None, request_bytes=10, at=next_minute), admission.Reservation)
            assert isinstance(admit("kept", None, None, request_bytes=10, at=next_minute), admission.Refusal)
            limit.requests_per_minute = 2
            limit.save()  # announced: the rules, and the plans kept with them, are read again
            assert isinstance(admit("kept", None, None, request_bytes=10, at=next_minute), admission.Reservation)
            assert isinstance(admit("kept", None, None, request_bytes=10, at=next_minute), admission.Refusal)
            store = counter_store()
            reset_counter_store()  # another store (the same kind): its own plan
            plan = admission.current_rules().plans[("default", "kept", None, None)]
            assert plan.store is store
            admit("kept", None, None, request_bytes=10, at=next_minute)
            assert admission.current_rules().plans[("default", "kept", None, None)].store is counter_store()
        finally:
            reset_counter_store()


def test_the_store_follows_redis_url():
    with override_settings(REDIS_URL=""):
        reset_counter_store()
        assert isinstance(counter_store(), DatabaseStore)
    with override_settings(REDIS_URL=REDIS_URL):
        reset_counter_store()
        assert isinstance(counter_store(), RedisStore)
    reset_counter_store()


@pytest.mark.django_db(transaction=True)
def test_an_unreachable_counter_store_admits_and_says_so(caplog):
    from asgiref.sync import async_to_sync

    from bench.harness import free_port

    RateLimit.objects.create(scope=Scope.CONNECTOR, connector_id="c", requests_per_minute=0)
    admission._unchecked = admission.UncheckedAdmissions()

    async def calls(count: int):
        return [await admission.admit("c", None, None, request_bytes=10) for _ in range(count)]

    with override_settings(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0"):  # nothing listens there
        reset_counter_store()
        try:
            decisions = async_to_sync(calls)(50)
        finally:
            reset_counter_store()
    assert decisions == [admission.NOTHING_RESERVED] * 50
    # The first is logged with its error; the others are counted, not logged one by one.
    assert caplog.text.count("admitted unchecked") == 1 and "cannot connect to Redis" in caplog.text
    assert admission._unchecked._since_logged == 49
    caplog.clear()
    reset_counter_store()  # the database store, reachable: checked again, and the log says so with the count
    refused = async_to_sync(admission.admit)("c", None, None, request_bytes=10)
    assert isinstance(refused, admission.Refusal)
    assert "49 more executions admitted unchecked" in caplog.text and "checked again" in caplog.text


def test_executions_ending_within_one_window_are_settled_together_in_one_step(store, monkeypatch):
    """Under a server, settlements are batched (usage/governance/enforcement/settlement.py): the executions that end within
    the window add their usage minus their estimates to the counters in one round trip, and the counters are
    exact afterwards."""
    from usage.governance.enforcement import settlement
    monkeypatch.setattr("usage.governance.enforcement.admission.counter_store", lambda: store)
    calls = []
    real_add = store.add

    async def counting_add(amounts):
        calls.append(list(amounts))
        return await real_add(amounts)

    monkeypatch.setattr(store, "add", counting_add)
    budget = Budget(pk=1, name="Team", scope=Scope.CONNECTOR, connector_id="c", unit=Unit.TOKENS, amount=Decimal(10**6))

    def reservation(estimate: int) -> admission.Reservation:
        charge = Charge("tokens", estimate, 10**6, LATER)
        return admission.Reservation(token_charges=[charge, Charge("tpm", estimate, 10**6, LATER)],
                                     budgets={"tokens": budget}, estimated_tokens=estimate)

    async def run():
        await store.add([("tokens", 100 + 50 + 30, LATER), ("tpm", 180, LATER)])  # as three admissions reserved
        tasks = {settlement.settle_soon(reservation(estimate), total_tokens=used, cost=None, connector_id="c")
                 for estimate, used in ((100, 120), (50, 10), (30, 30))}
        assert len(tasks) == 1  # one batch
        await asyncio.gather(*tasks)
        later = settlement.settle_soon(reservation(5), total_tokens=7, cost=None, connector_id="c")
        await later  # the next window: a batch of its own

    from asgiref.sync import async_to_sync

    async_to_sync(run)()  # the database store's sync work then runs in this thread, as under a server's
    assert len(calls) == 3  # the reservations, then one settlement per window
    assert sorted(calls[1]) == [("tokens", 20 - 40 + 0, LATER), ("tpm", -20, LATER)]
    assert store.values_now(["tokens", "tpm"]) == {"tokens": 160 + 2, "tpm": 160 + 2}


def _admit_at_once(store, monkeypatch, count: int, **call) -> list:
    """``count`` admissions of one call at the same time, against ``store``."""
    from asgiref.sync import async_to_sync

    monkeypatch.setattr("usage.governance.enforcement.admission.counter_store", lambda: store)

    async def burst():
        return await asyncio.gather(*(admission.admit("c-burst", None, None, **call) for _ in range(count)))

    return async_to_sync(burst)()  # the database store's sync work then runs in this thread, as under a server's


def test_a_budget_admits_only_the_calls_whose_reservations_fit_however_many_arrive_at_once(
        store, monkeypatch, transactional_db):
    """A reservation is the prompt plus the completion cap, and it must fit in what is left: 50 calls at once
    against a budget of 10,000 tokens, each reserving 100 + 1,000, admit 9; settled with what they used (each at most
    its reservation, as a provider that honours max_tokens), the period's count stays within the budget."""
    Budget.objects.create(name="Burst", scope=Scope.CONNECTOR, connector_id="c-burst", period=Period.MONTH,
                          unit=Unit.TOKENS, amount=Decimal(10_000))
    decisions = _admit_at_once(store, monkeypatch, 50, request_bytes=400, completion_cap=1000)
    admitted = [d for d in decisions if isinstance(d, admission.Reservation)]
    assert len(admitted) == 10_000 // 1100 == 9
    assert all(isinstance(d, admission.Refusal) and "reserves 1,100 tokens (its prompt and its max_tokens)" in d.message
               for d in decisions if d not in admitted)
    from asgiref.sync import async_to_sync

    for reservation in admitted:
        async_to_sync(admission.settle)(reservation, total_tokens=1100, cost=None)
    key = admitted[0].token_charges[0].key
    assert store.values_now([key]) == {key: 9 * 1100}


def test_calls_without_a_cap_reserve_the_budgets_allowance_and_a_provider_past_it_overshoots_only_by_the_excess(
        store, monkeypatch, transactional_db):
    """The case of a hard budget of 1,000 tokens and an upstream that reports 200,000 tokens per call: with the
    prompt alone reserved, 13 concurrent calls were admitted and 2,600,000 tokens spent. Now a call that sets no cap
    reserves the default allowance (4,096 tokens), which does not fit: none is admitted. With an allowance that
    fits, the calls admitted at once are bounded by the budget over the reservation, and the overshoot is exactly
    what they used beyond their reservations."""
    budget = Budget.objects.create(name="Small", scope=Scope.CONNECTOR, connector_id="c-burst", period=Period.DAY,
                                   unit=Unit.TOKENS, amount=Decimal(1000))
    assert budget.completion_allowance == 4096
    decisions = _admit_at_once(store, monkeypatch, 13, request_bytes=100)
    assert all(isinstance(d, admission.Refusal) for d in decisions)
    assert "the budget's completion allowance of 4,096 tokens, as it sets no max_tokens" in decisions[0].message

    budget.completion_allowance = 300
    budget.save()
    decisions = _admit_at_once(store, monkeypatch, 13, request_bytes=100)  # 25 + 300 reserved each
    admitted = [d for d in decisions if isinstance(d, admission.Reservation)]
    assert len(admitted) == 1000 // 325 == 3
    from asgiref.sync import async_to_sync

    for reservation in admitted:  # the provider ignores the cap it was never sent
        async_to_sync(admission.settle)(reservation, total_tokens=200_000, cost=None)
    key = admitted[0].token_charges[0].key
    spent = store.values_now([key])[key]
    assert spent == 3 * 200_000
    assert spent - 1000 <= sum(200_000 - r.token_charges[0].amount for r in admitted)  # the README's bound
    later = _admit_at_once(store, monkeypatch, 1, request_bytes=4, completion_cap=1)[0]
    assert isinstance(later, admission.Refusal) and "is used up" in later.message


@pytest.mark.django_db(transaction=True)
def test_a_money_budget_reserves_the_price_of_the_prompt_and_the_completion_cap(monkeypatch):
    """estimate_cost is asked for the prompt's tokens and the completion cap; the reservation must fit."""
    Budget.objects.create(name="Money", scope=Scope.CONNECTOR, connector_id="c-burst", period=Period.DAY,
                          unit=Unit.COST, amount=Decimal("1.00"))
    asked = []

    async def price(prompt: int, completion: int) -> int:  # 1 nano per prompt token, 10**6 per completion token
        asked.append((prompt, completion))
        return prompt + completion * 10**6

    store = DatabaseStore()
    admitted = _admit_at_once(store, monkeypatch, 1, request_bytes=40, completion_cap=400, estimate_cost=price)[0]
    assert asked == [(10, 400)] and [c.amount for c in admitted.cost_charges] == [400 * 10**6 + 10]
    refused = _admit_at_once(store, monkeypatch, 1, request_bytes=40, completion_cap=600, estimate_cost=price)[0]
    assert isinstance(refused, admission.Refusal)
    assert "has 0.599999990 USD left of 1 USD" in refused.message and "reserves 0.600000010 USD" in refused.message
    # Without a price a money budget reserves one nano: it still refuses once it is used up.
    unpriced = _admit_at_once(store, monkeypatch, 1, request_bytes=40)[0]
    assert [c.amount for c in unpriced.cost_charges] == [1]
