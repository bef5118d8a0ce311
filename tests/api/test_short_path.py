"""The API's short path (connectors_admin/asgi.py): what it does instead of Django's per-request work."""

import asyncio
import io
import threading

import pytest
from django.core import signals
from django.db import connection
from django.http import JsonResponse

from connectors_admin import asgi


def _closing_thread(taken: bool) -> tuple[str, int]:
    """Close a response through the short path; the thread its request_finished ran on, and how often it ran."""
    seen = []

    def receiver(**kwargs):
        seen.append(threading.current_thread().name)

    signals.request_finished.connect(receiver)
    try:
        asgi._connection_taken = taken
        response = JsonResponse({"ok": True})
        response._handler_class = asgi.CredentialedAPIHandler

        async def close():
            await asgi.api_application.close_response(response)
            return threading.current_thread().name

        loop_thread = asyncio.run(close())
    finally:
        signals.request_finished.disconnect(receiver)
    return ("loop" if seen == [loop_thread] else "other"), len(seen)


@pytest.mark.django_db  # request_finished checks the thread's connection, which tests may only touch so
def test_a_response_is_closed_without_a_thread_hop_when_no_connection_was_taken():
    assert _closing_thread(taken=False) == ("loop", 1)


@pytest.mark.django_db  # request_finished then closes the thread's connection, which tests may only touch so
def test_a_response_is_closed_on_the_sync_thread_after_a_connection_was_taken_there():
    # request_finished's close_old_connections gives the sync thread's connection back to the pool.
    assert _closing_thread(taken=True) == ("other", 1)
    assert asgi._connection_taken is False  # until the next connection is taken


@pytest.mark.django_db(transaction=True)
def test_taking_a_database_connection_is_noted():
    import threading

    from django.db import connections

    def take_one():  # a thread of its own has no connection yet, as the sync thread after it gave its own back
        connection.ensure_connection()
        connections.close_all()

    asgi._connection_taken = False
    thread = threading.Thread(target=take_one)
    thread.start()
    thread.join()
    assert asgi._connection_taken is True


def test_the_url_resolution_is_kept_per_path_and_not_for_unknown_paths():
    from django.test import RequestFactory

    asgi._resolved.clear()
    request = RequestFactory().post("/api/actions/connector/abc/_execute")
    first = asgi.api_application.resolve_request(request)
    again = asgi.api_application.resolve_request(RequestFactory().post("/api/actions/connector/abc/_execute"))
    assert again is first and first.kwargs == {"connector_id": "abc"}
    other = asgi.api_application.resolve_request(RequestFactory().post("/api/actions/connector/xyz/_execute"))
    assert other.kwargs == {"connector_id": "xyz"}
    unknown = asgi.api_application.resolve_request(RequestFactory().get("/api/no-such-route"))
    assert unknown.url_name == asgi.UNKNOWN_API_PATH  # Kibana's JSON 404, never kept
    assert len(asgi._resolved) == 2


def _close_on_the_loop(response) -> list:
    """Close ``response`` through the short path with no connection taken; the senders of request_finished seen."""
    sent = []
    real_send = signals.request_finished.send
    signals.request_finished.send = lambda sender, **named: sent.append(sender) or real_send(sender, **named)
    try:
        asgi._connection_taken = False
        response._handler_class = asgi.CredentialedAPIHandler
        asyncio.run(asgi.api_application.close_response(response, response._request))
    finally:
        del signals.request_finished.send
    return sent


def _response_of(request) -> JsonResponse:
    response = JsonResponse({"ok": True})
    response._request = request
    response._resource_closers.append(request.close)
    return response


def test_with_only_djangos_own_receivers_the_response_is_closed_without_request_finished():
    from django.test import RequestFactory

    assert asgi.only_djangos_own_receivers(signals.request_finished)
    from django.utils.datastructures import MultiValueDict

    request = RequestFactory().post("/api/actions/connector/abc/_execute")
    upload = io.BytesIO()
    request._files = MultiValueDict({"file": [upload]})  # what request.close() closes
    response = _response_of(request)
    assert _close_on_the_loop(response) == []  # their work: nothing to do here (asgi.DJANGOS_OWN_FINISHED_RECEIVERS)
    assert upload.closed and response.closed and response._resource_closers == []


@pytest.mark.django_db  # request_finished checks the thread's connection, which tests may only touch so
def test_a_request_with_a_urlconf_of_its_own_still_sends_request_finished():
    from django.test import RequestFactory

    request = RequestFactory().post("/api/actions/connector/abc/_execute")
    request.urlconf = "connectors_admin.urls"  # reset_urlconf then has work to do
    assert _close_on_the_loop(_response_of(request)) == [asgi.CredentialedAPIHandler]


def test_any_other_receiver_of_request_finished_gets_it():
    def receiver(**kwargs):
        pass

    signals.request_finished.connect(receiver)
    try:
        assert not asgi.only_djangos_own_receivers(signals.request_finished)
    finally:
        signals.request_finished.disconnect(receiver)
    assert asgi.only_djangos_own_receivers(signals.request_finished)
