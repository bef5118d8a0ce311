"""A burst of calls that a process's caches cannot answer yet verifies the credential once and reads the connector
once (connectors/caching/single_flight.py).

A new worker, or a cache entry that has just expired, meets a script's calls all at once. The first one verifies
(the password hash, or the API key's lookup) or reads the connector, and the others wait for its answer: on the old
code each of them queried the database on the one sync thread in turn, which added seconds to a burst of 1,000
(docs/PERFORMANCE.md, "The first burst"). The calls are started together in one event loop, so the first one is
still running when the others arrive, whatever the machine's speed.
"""

import asyncio
from unittest import mock

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.hashers import MD5PasswordHasher
from django.db import OperationalError

from connectors.accounts.api_keys import create_api_key
from connectors.api import auth
from connectors.caching import connector_cache
from connectors.lookup import afind
from connectors.spaces import directory
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db

BURST = 50


def at_once(make_call, count: int = BURST) -> list:
    async def burst():
        return await asyncio.gather(*(make_call() for _ in range(count)), return_exceptions=True)

    return async_to_sync(burst)()


def test_a_burst_with_a_new_api_key_looks_it_up_once(operator):
    record, key = create_api_key(operator, "script")
    with mock.patch.object(auth, "_verify_api_key", side_effect=auth._verify_api_key) as lookup:
        users = at_once(lambda: auth.authenticate_api_key(key))
    assert lookup.call_count == 1
    assert [user.pk for user in users] == [operator.pk] * BURST


def test_a_burst_with_a_wrong_api_key_is_refused_after_one_lookup(operator):
    with mock.patch.object(auth, "_verify_api_key", side_effect=auth._verify_api_key) as lookup:
        answers = at_once(lambda: auth.authenticate_api_key("not-a-key"))
    assert lookup.call_count == 1
    assert all(isinstance(answer, auth.NotAuthenticated) for answer in answers)
    assert str(answers[-1]) == "Invalid or revoked API key."


def test_a_burst_with_a_new_password_runs_the_hasher_once(operator):
    credentials = (operator.username, PASSWORD)
    with mock.patch.object(MD5PasswordHasher, "verify", autospec=True, side_effect=MD5PasswordHasher.verify) as verify:
        users = at_once(lambda: auth.authenticate_basic(*credentials))
    assert verify.call_count == 1
    assert [user.pk for user in users] == [operator.pk] * BURST


def test_when_the_one_verifying_fails_the_others_verify_on_their_own(operator):
    _record, key = create_api_key(operator, "script")
    real_lookup = auth._verify_api_key
    calls = []

    def database_gone_once(raw_key):
        calls.append(raw_key)
        if len(calls) == 1:
            raise OperationalError("the database went away")
        return real_lookup(raw_key)

    with mock.patch.object(auth, "_verify_api_key", side_effect=database_gone_once):
        answers = at_once(lambda: auth.authenticate_api_key(key), count=5)
    assert isinstance(answers[0], OperationalError)  # the first caller gets its own error (503 at the API)
    assert [answer.pk for answer in answers[1:]] == [operator.pk] * 4
    assert len(calls) == 5  # the first, then each of the others on its own


def test_a_burst_of_calls_to_a_connector_not_cached_reads_it_once(make_connector, django_assert_num_queries):
    connector = make_connector()
    connector_cache.forget_everything()
    with django_assert_num_queries(1):
        found = at_once(lambda: afind(str(connector.pk)))
    assert [each.pk for each in found] == [connector.pk] * BURST
    with django_assert_num_queries(0):  # kept: the next calls need no query
        assert at_once(lambda: afind(str(connector.pk)), count=3)[0].pk == connector.pk


def test_a_burst_of_calls_to_an_unknown_connector_reads_once_and_keeps_nothing(db, django_assert_num_queries):
    with django_assert_num_queries(1):
        assert at_once(lambda: afind("00000000-0000-4000-8000-000000000000")) == [None] * BURST
    with django_assert_num_queries(1):  # a connector created meanwhile elsewhere would be found
        assert at_once(lambda: afind("00000000-0000-4000-8000-000000000000"), count=3) == [None] * 3


def test_a_burst_of_calls_under_a_space_url_loads_the_spaces_once(db, django_assert_num_queries):
    directory.forget()
    with mock.patch.object(directory, "all_spaces", side_effect=directory.all_spaces) as hops:
        with django_assert_num_queries(1):
            lists = at_once(directory.aall_spaces)
    assert hops.call_count == 1  # one hop to the sync thread, not one a call
    assert all(spaces is lists[0] and "default" in spaces for spaces in lists)
