"""The pipelined Redis connection of the budget and rate-limit counters (usage/governance/enforcement/redis_pipeline.py),
against the Redis that runs on every machine of this project (127.0.0.1:6379, database 14 here)."""

import asyncio
import datetime as dt
import uuid

import pytest
import redis

from tests.environment import redis_test_url  # noqa: E402
from tests.helpers.outbound import closed_port
from usage.governance.enforcement.counters import Charge, RedisStore
from usage.governance.enforcement.redis_pipeline import PipelinedRedis, RedisReplyError, RedisUnavailable, pack

URL = redis_test_url(1)
LATER = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


@pytest.fixture(autouse=True)
def _redis():
    try:
        redis.Redis.from_url(URL, socket_connect_timeout=1).ping()
    except redis.RedisError:
        pytest.fail("Redis is expected at 127.0.0.1:6379 (it runs on every machine of this project)")


def test_commands_are_framed_as_resp_arrays_of_bulk_strings():
    assert pack("SET", "k", 12) == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n12\r\n"
    assert pack("ECHO", "é") == b"*2\r\n$4\r\nECHO\r\n$2\r\n\xc3\xa9\r\n"


def test_concurrent_commands_on_one_connection_each_get_their_own_reply():
    key = f"test:pipe:{uuid.uuid4().hex}"

    async def run():
        connection = PipelinedRedis(URL)
        replies = await asyncio.gather(*(connection.execute("INCRBY", key, n) for n in range(1, 201)))
        echoed = await asyncio.gather(*(connection.execute("ECHO", f"reply {n}") for n in range(50)))
        await connection.close()
        return replies, echoed

    replies, echoed = asyncio.run(run())
    assert sorted(replies) == sorted({sum(range(1, n + 1)) for n in range(1, 201)})  # running totals, each once
    assert echoed == [f"reply {n}".encode() for n in range(50)]  # matched in order
    assert int(redis.Redis.from_url(URL).get(key)) == sum(range(1, 201))


def test_the_database_of_the_url_is_selected():
    key = f"test:pipe:{uuid.uuid4().hex}"

    async def run():
        connection = PipelinedRedis(URL)
        await connection.execute("SET", key, "here")
        await connection.close()

    asyncio.run(run())
    assert redis.Redis.from_url(URL).get(key) == b"here"
    assert redis.Redis.from_url("redis://127.0.0.1:6379/0").get(key) is None


def test_an_error_reply_is_raised_and_the_connection_goes_on():
    async def run():
        connection = PipelinedRedis(URL)
        with pytest.raises(RedisReplyError, match="unknown command"):
            await connection.execute("NOSUCHCOMMAND")
        reply = await connection.execute("PING")
        await connection.close()
        return reply

    assert asyncio.run(run()) == b"PONG"


def test_scripts_flushed_from_redis_are_sent_again():
    store = RedisStore(URL, prefix=f"test:{uuid.uuid4().hex}")

    async def run():
        first = await store.reserve([Charge("rpm", 1, 10, LATER, must_fit=True)])
        await store._connection().execute("SCRIPT", "FLUSH")  # as a restarted Redis: no script cached
        second = await store.reserve([Charge("rpm", 1, 10, LATER, must_fit=True)])
        values = await store.add([("rpm", 3, LATER)])
        return first, second, values

    assert asyncio.run(run()) == (None, None, {"rpm": 5})


def test_a_killed_connection_fails_what_waits_on_it_and_the_next_command_connects_again():
    async def run():
        connection = PipelinedRedis(URL)
        await connection.execute("CLIENT", "SETNAME", "pipeline-under-test")
        admin = redis.Redis.from_url(URL)
        for client in admin.client_list():
            if client.get("name") == "pipeline-under-test":
                admin.client_kill_filter(_id=client["id"])
        with pytest.raises(RedisUnavailable):
            await connection.execute("BLPOP", f"test:pipe:{uuid.uuid4().hex}", 1)
        reply = await connection.execute("PING")  # a new connection
        await connection.close()
        return reply

    assert asyncio.run(run()) == b"PONG"


def test_a_reply_that_does_not_come_in_time_fails_the_connection_and_the_next_command_connects_again(monkeypatch):
    """A Redis that stops answering must not hold governed calls: the oldest command's deadline fails the connection
    (every command waiting on it), and the next command opens a new one."""
    from usage.governance.enforcement import redis_pipeline
    monkeypatch.setattr(redis_pipeline, "REPLY_TIMEOUT_SECONDS", 0.4)

    async def run():
        connection = PipelinedRedis(URL)
        await connection.execute("PING")
        loop = asyncio.get_running_loop()
        started = loop.time()
        slow = asyncio.ensure_future(connection.execute("BLPOP", f"test:pipe:{uuid.uuid4().hex}", 2))
        queued = asyncio.ensure_future(connection.execute("PING"))  # behind the slow one: lost with it
        with pytest.raises(RedisUnavailable, match="no reply from Redis within 0.4 s"):
            await slow
        assert 0.35 <= loop.time() - started < 1.5
        with pytest.raises(RedisUnavailable):
            await queued
        reply = await connection.execute("PING")
        await connection.close()
        return reply

    assert asyncio.run(run()) == b"PONG"


def test_a_command_sent_while_the_timer_runs_gets_its_own_deadline(monkeypatch):
    """The timer armed by an earlier command must not fail a later one before the later one's own deadline."""
    from usage.governance.enforcement import redis_pipeline
    monkeypatch.setattr(redis_pipeline, "REPLY_TIMEOUT_SECONDS", 0.5)

    async def run():
        connection = PipelinedRedis(URL)
        first = await connection.execute("BLPOP", f"test:pipe:{uuid.uuid4().hex}", 0.3)  # arms the timer, for 0.5 s
        await asyncio.sleep(0.05)
        # Sent at about 0.35 s: waits until about 0.65 s, past the first timer's 0.5 s, within its own 0.85 s.
        second = await connection.execute("BLPOP", f"test:pipe:{uuid.uuid4().hex}", 0.3)
        reply = await connection.execute("PING")
        await connection.close()
        return first, second, reply

    assert asyncio.run(run()) == (None, None, b"PONG")


def test_an_unreachable_redis_is_a_clear_error_not_a_hang():
    port = closed_port()

    async def run():
        connection = PipelinedRedis(f"redis://127.0.0.1:{port}/0")
        with pytest.raises(RedisUnavailable, match=f"cannot connect to Redis at 127.0.0.1:{port}"):
            await connection.execute("PING")

    asyncio.run(run())


def test_after_a_failed_connection_commands_fail_at_once_for_a_moment(monkeypatch):
    """During a Redis outage, governed calls must not each wait for a connection attempt (README)."""
    from usage.governance.enforcement import redis_pipeline
    port = closed_port()
    attempts = []
    real_open = PipelinedRedis._open

    async def counting_open(self, loop):
        attempts.append(loop)
        return await real_open(self, loop)

    monkeypatch.setattr(PipelinedRedis, "_open", counting_open)
    monkeypatch.setattr(redis_pipeline, "RECONNECT_PAUSE_SECONDS", 0.3)

    async def run():
        connection = PipelinedRedis(f"redis://127.0.0.1:{port}/0")
        for _ in range(20):
            with pytest.raises(RedisUnavailable, match="cannot connect"):
                await connection.execute("PING")
        assert len(attempts) == 1
        await asyncio.sleep(0.35)
        with pytest.raises(RedisUnavailable):
            await connection.execute("PING")
        assert len(attempts) == 2  # tried again once the pause was over

    asyncio.run(run())


def test_a_refused_password_is_a_clear_error():
    async def run():
        connection = PipelinedRedis(URL.replace("redis://", "redis://:wrong-password@"))
        with pytest.raises(RedisUnavailable, match="set-up"):
            await connection.execute("PING")

    asyncio.run(run())


@pytest.mark.parametrize("url", ["unix:///tmp/redis.sock", "http://127.0.0.1:6379"])
def test_only_redis_urls_are_taken(url):
    with pytest.raises(ValueError, match="redis://"):
        PipelinedRedis(url)


def test_bytes_that_are_not_redis_fail_the_connection_and_the_next_command_connects_again():
    """A server that answers what hiredis cannot read (or a reply no command asked for) fails what waits on the
    connection with a clear error instead of leaving it waiting, and the next command opens a new connection."""

    async def run():
        connections = []

        async def serve(reader, writer):
            connections.append(writer)
            await reader.read(1024)
            writer.write(b"?not redis\r\n" if len(connections) == 1 else b"+PONG\r\n+UNASKED\r\n")
            await writer.drain()
            await reader.read(1024)

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        connection = PipelinedRedis(f"redis://127.0.0.1:{port}/0")
        with pytest.raises(RedisUnavailable, match="cannot be read"):
            await connection.execute("PING")
        assert await connection.execute("PING") == b"PONG"  # the second connection; its unasked reply then fails it
        await asyncio.sleep(0.05)
        assert connection._transport is None
        await connection.close()
        for writer in connections:
            writer.close()
        server.close()
        return len(connections)

    assert asyncio.run(run()) == 2
