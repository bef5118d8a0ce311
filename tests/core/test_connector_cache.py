"""The execution path's connector cache (connectors/caching/connector_cache.py) and how changes reach every process
(connectors/caching/invalidation.py: PostgreSQL LISTEN/NOTIFY)."""

import time

import psycopg
import pytest
from asgiref.sync import async_to_sync
from django.db import connection, transaction

from connectors.api import auth
from connectors.caching import connector_cache, expiring_cache, invalidation
from connectors.lookup import afind as afind_connector
from connectors.models import Connector
from tests.conftest import basic_auth
from tests.helpers.execute import execute_with_client, run_body


@async_to_sync
async def afind(connector_id):
    return await afind_connector(connector_id)


class TestTheCache:
    def test_a_connector_found_once_is_served_without_a_query(self, make_connector, django_assert_num_queries):
        connector = make_connector()
        assert afind(connector.pk).name == "Test connector"
        with django_assert_num_queries(0):
            assert afind(connector.pk).pk == connector.pk

    def test_an_edit_is_seen_by_the_next_execution(self, make_connector):
        connector = make_connector()
        afind(connector.pk)
        connector.name = "Renamed"
        connector.api_key = "sk-rotated-key-0000000000"
        connector.save()
        found = afind(connector.pk)
        assert (found.name, found.api_key) == ("Renamed", "sk-rotated-key-0000000000")

    def test_a_deleted_connector_cannot_be_executed(self, make_connector, client, operator):
        connector = make_connector()
        afind(connector.pk)
        Connector.objects.get(pk=connector.pk).delete()
        assert afind(connector.pk) is None
        response = execute_with_client(client, connector, run_body({"messages": [{"role": "user", "content": "hi"}]}),
                                       user=operator)
        assert response.status_code == 404

    def test_an_unknown_id_is_not_remembered(self, make_connector, django_assert_num_queries):
        assert afind("made-later") is None
        make_connector(id="made-later")
        assert afind("made-later").pk == "made-later"

    def test_entries_expire(self, make_connector, settings, monkeypatch, django_assert_num_queries):
        settings.CONNECTOR_CACHE_SECONDS = 5
        connector = make_connector()
        afind(connector.pk)
        Connector.objects.filter(pk=connector.pk).update(name="Changed without signals")  # as another process might
        assert afind(connector.pk).name == "Test connector"
        later = time.monotonic() + 6
        monkeypatch.setattr(expiring_cache.time, "monotonic", lambda: later)
        assert afind(connector.pk).name == "Changed without signals"

    def test_the_cache_can_be_turned_off(self, make_connector, settings, django_assert_num_queries):
        settings.CONNECTOR_CACHE_SECONDS = 0
        connector = make_connector()
        afind(connector.pk)
        with django_assert_num_queries(1):
            afind(connector.pk)

    def test_a_notice_drops_the_entry(self, make_connector):
        connector = make_connector()
        afind(connector.pk)
        invalidation.dispatch(f"connector:{connector.pk}")
        assert connector_cache.get(connector.pk) is None

    def test_notices_about_users_drop_their_verified_credentials(self, client, operator, make_connector):
        connector = make_connector()
        headers = {"HTTP_AUTHORIZATION": basic_auth(operator)}
        client.post(f"/api/actions/connector/{connector.pk}/_execute", {}, content_type="application/json", **headers)
        assert len(auth._cache) == 1
        invalidation.dispatch(f"user:{operator.pk}")
        assert len(auth._cache) == 0


class TestExpiringCache:
    def test_it_stays_within_its_bound(self):
        cache = expiring_cache.ExpiringCache(max_entries=3)
        for key in range(10):
            cache.put(key, f"value {key}", ttl=60)
        assert len(cache) <= 3 and cache.get(9) == "value 9"

    def test_a_zero_time_limit_keeps_nothing(self):
        cache = expiring_cache.ExpiringCache()
        cache.put("key", "value", ttl=0)
        assert cache.get("key") is None

    def test_drop_where_drops_only_the_matching_values(self):
        cache = expiring_cache.ExpiringCache()
        for key in ("a", "b", "c"):
            cache.put(key, key.upper(), ttl=60)
        cache.drop_where(lambda value: value in ("A", "C"))
        assert (cache.get("a"), cache.get("b"), cache.get("c")) == (None, "B", None)


postgresql_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="LISTEN/NOTIFY is PostgreSQL's; CI runs the suite on PostgreSQL too"
)


def raw_connection():
    """A connection of its own, as another server process would have, to the test database."""
    return psycopg.connect(**connection.get_connection_params(), autocommit=True)


def wait_until(condition, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@postgresql_only
@pytest.mark.django_db(transaction=True)
class TestAcrossProcesses:
    @pytest.fixture
    def listener(self):
        listener = invalidation.Listener(reconnect_delays=(0.05,)).start()
        assert listener.listening.wait(5)
        yield listener
        listener.stop()

    def test_a_committed_change_is_announced_to_every_listening_process(self, make_connector):
        connector = make_connector()
        with raw_connection() as other:
            other.execute(f"LISTEN {invalidation.CHANNEL}")
            with transaction.atomic():
                Connector.objects.get(pk=connector.pk).save()
            heard = [notice.payload for notice in other.notifies(timeout=2, stop_after=1)]
        assert heard == [f"connector:{connector.pk}"]

    def test_a_rolled_back_change_is_not_announced(self, make_connector):
        connector = make_connector()
        with raw_connection() as other:
            other.execute(f"LISTEN {invalidation.CHANNEL}")
            with pytest.raises(RuntimeError), transaction.atomic():
                Connector.objects.get(pk=connector.pk).save()
                raise RuntimeError("roll back")
            assert [notice.payload for notice in other.notifies(timeout=0.5)] == []

    def test_the_listener_drops_what_another_process_changed(self, make_connector, listener):
        connector = make_connector()
        afind(connector.pk)
        with raw_connection() as other:
            other.execute("SELECT pg_notify(%s, %s)", [invalidation.CHANNEL, f"connector:{connector.pk}"])
        assert wait_until(lambda: connector_cache.get(connector.pk) is None)

    def test_after_losing_its_connection_the_listener_starts_from_an_empty_cache(self, make_connector):
        listener = invalidation.Listener(reconnect_delays=(0.5,)).start()
        try:
            assert listener.listening.wait(5)
            connector = make_connector()
            with raw_connection() as other:
                other.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND query = %s AND pid <> pg_backend_pid()",
                    [f"LISTEN {invalidation.CHANNEL}"],
                )
            assert wait_until(lambda: not listener.listening.is_set())
            afind(connector.pk)  # cached while notices could be missed ...
            assert connector_cache.get(connector.pk) is not None
            assert listener.listening.wait(5)
            assert connector_cache.get(connector.pk) is None  # ... and dropped on reconnecting
        finally:
            listener.stop()
