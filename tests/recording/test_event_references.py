"""An event outlives its user and its API key (migration 0014): the event of a call whose user or key was deleted
while it ran is recorded, by the writer thread and by the event loop's writer alike; deleting a user or a key still
empties the fields in their stored events; and the admin's event page names a key deleted since.

These tests use committed transactions: the writers have their own connections.
"""

import asyncio
import secrets

import pytest
from django.db import connection
from django.utils import timezone

from connectors.models import ApiKey
from tests.helpers.events import build_event
from tests.recording.test_loop_writer import served
from usage.models import ExecutionEvent, UsageRollup
from usage.recording import writer as recording

pytestmark = pytest.mark.django_db(transaction=True)

CONNECTOR = "references-test"


def key_of(user, name: str = "ci") -> ApiKey:
    return ApiKey.objects.create(user=user, name=name, prefix="ca_test", digest=secrets.token_hex(32))


def event_of(user, key, index: int = 0) -> ExecutionEvent:
    return build_event(timezone.now(), connector_id=CONNECTOR, user_id=user.pk, api_key_id=key.pk,
                       user_name=user.get_username(), error_message=f"event {index}")


def through_the_thread(events: list[ExecutionEvent]) -> list[str]:
    writer = recording.EventWriter().start()
    try:
        futures = [writer.submit(event) for event in events]
        assert writer.flush(timeout=10)
        return [future.result(timeout=5) for future in futures]
    finally:
        writer.stop(timeout=5)


def through_the_loop(events: list[ExecutionEvent]) -> list[str]:
    if connection.vendor != "postgresql":
        pytest.skip("the event loop's writer runs on PostgreSQL only (SQLite keeps the thread)")

    async def body():
        loop_writer = recording._loop_writer
        outcomes = await asyncio.gather(*(recording.record_execution(event) for event in events))
        return outcomes, loop_writer.events_committed, loop_writer.events_handed_over

    _sent, (outcomes, committed, handed_over) = asyncio.run(served(body))
    assert (committed, handed_over) == (len(events), 0)  # written by the loop itself, none refused
    return outcomes


@pytest.mark.parametrize("write", [through_the_thread, through_the_loop], ids=["thread", "loop"])
def test_the_event_of_a_call_whose_user_and_key_were_deleted_while_it_ran_is_recorded(django_user_model, write):
    leaver, stayer = django_user_model.objects.create_user("leaver"), django_user_model.objects.create_user("stayer")
    leavers_key, stayers_key = key_of(leaver), key_of(stayer)
    # Both calls are under way (their events built) when the leaver's account goes, and their key with it.
    events = [event_of(leaver, leavers_key, 0), event_of(stayer, stayers_key, 1)]
    leaver_id, leavers_key_id = leaver.pk, leavers_key.pk
    leaver.delete()
    assert not ApiKey.objects.filter(pk=leavers_key_id).exists()

    outcomes = write(events)

    assert outcomes == [recording.COMMITTED] * 2
    stored = {row["error_message"]: row for row in ExecutionEvent.objects.filter(connector_id=CONNECTOR).values()}
    assert set(stored) == {"event 0", "event 1"}
    assert (stored["event 0"]["user_id"], stored["event 0"]["api_key_id"]) == (leaver_id, leavers_key_id)
    assert stored["event 0"]["user_name"] == "leaver"
    assert (stored["event 1"]["user_id"], stored["event 1"]["api_key_id"]) == (stayer.pk, stayers_key.pk)
    assert sum(UsageRollup.objects.filter(connector_id=CONNECTOR).values_list("requests", flat=True)) == 2


def test_deleting_a_key_or_a_user_still_empties_it_in_their_stored_events(django_user_model):
    owner = django_user_model.objects.create_user("owner")
    key = key_of(owner)
    assert through_the_thread([event_of(owner, key)]) == [recording.COMMITTED]

    key.delete()
    assert list(ExecutionEvent.objects.filter(connector_id=CONNECTOR).values_list("user_id", "api_key_id")) == [
        (owner.pk, None)]
    owner.delete()
    assert list(ExecutionEvent.objects.filter(connector_id=CONNECTOR).values_list("user_id", "api_key_id",
                                                                                 "user_name")) == [
        (None, None, "owner")]


def test_the_admins_event_page_shows_a_key_deleted_since_by_its_number(admin_client, django_user_model):
    owner = django_user_model.objects.create_user("owner")
    kept, gone = key_of(owner, "kept"), key_of(owner, "gone")
    events = [event_of(owner, kept, 0), event_of(owner, gone, 1)]
    gone_id = gone.pk
    gone.delete()
    through_the_thread(events)
    by_message = {event.error_message: event for event in ExecutionEvent.objects.filter(connector_id=CONNECTOR)}

    kept_page = admin_client.get(f"/admin/usage/executionevent/{by_message['event 0'].pk}/change/")
    gone_page = admin_client.get(f"/admin/usage/executionevent/{by_message['event 1'].pk}/change/")

    assert kept_page.status_code == gone_page.status_code == 200
    assert "kept" in kept_page.content.decode()
    assert f"#{gone_id} (deleted)" in gone_page.content.decode()
