"""ExecutionEvent.opened (usage/models/events.py): the event every execution starts with, built without
Model.__init__, is the instance ExecutionEvent(**values) would be, and is stored the same way."""

import pytest
from django.contrib.auth.models import User
from django.db.models.signals import post_init, pre_init
from django.utils import timezone

from connectors.accounts.api_keys import create_api_key
from usage.models import ExecutionEvent


def values_of(event: ExecutionEvent) -> dict:
    return {field.attname: getattr(event, field.attname) for field in ExecutionEvent._meta.concrete_fields
            if field.attname != "uid"}


@pytest.mark.django_db
def test_an_opened_event_is_the_instance_the_model_makes_and_is_stored_alike():
    user = User.objects.create(username="ann")
    key, _ = create_api_key(user, "ci")
    values = dict(timestamp=timezone.now(), connector_id="c1", connector_name="One", connector_is_preconfigured=True,
                  user=user, user_name="ann", source="api", sub_action="run", outcome="failure", request_bytes=12,
                  api_key_id=key.pk, space_id="team-a")

    opened, made = ExecutionEvent.opened(**values), ExecutionEvent(**values)

    assert values_of(opened) == values_of(made)
    assert opened.uid is not None and opened.uid != ExecutionEvent.opened(**values).uid  # a new uid each
    assert opened.user is user  # cached, as the model caches it: no query for the user
    assert (opened._state.adding, opened._state.db) == (made._state.adding, made._state.db)
    ExecutionEvent.objects.insert_batch([opened])
    stored = ExecutionEvent.objects.get(pk=opened.pk)
    assert values_of(stored) == {**values_of(made), "id": opened.pk, "user_id": user.pk}


def test_without_a_user_the_defaults_are_the_models():
    opened, made = ExecutionEvent.opened(connector_id="c2"), ExecutionEvent(connector_id="c2")
    assert abs(opened.timestamp - made.timestamp).total_seconds() < 1  # timezone.now, called for each
    assert values_of(opened) | {"timestamp": None} == values_of(made) | {"timestamp": None}


def test_no_receiver_listens_to_the_construction_opened_skips():
    # Model.__init__ sends pre_init and post_init; opened() does not, which is right only while nobody listens.
    assert not pre_init.has_listeners(ExecutionEvent) and not post_init.has_listeners(ExecutionEvent)
