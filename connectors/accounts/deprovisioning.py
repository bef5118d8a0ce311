"""Taking a person's access away at once: their account, their browser sessions and their API keys.

Saving ``is_active = False`` drops the user's verified credentials from every server process's cache (the
post_save receiver of connectors/api/auth.py announces it through connectors/caching/invalidation.py), so their
next API call is checked against the database and refused. Django would refuse their sessions at the next request
too (an inactive user's session finds no user), but the sessions are deleted as well, so that none is left to be
revived by reactivating the account.
"""

from importlib import import_module

from django.conf import settings
from django.contrib.auth import SESSION_KEY
from django.contrib.sessions.models import Session
from django.db import transaction
from django.utils import timezone

from connectors.audit import trail
from connectors.models import ApiKey


def end_sessions(user) -> int:
    """Delete every unexpired session signed in as ``user``; returns how many.

    Sessions are stored by key, not by user, so each unexpired one is decoded: a few microseconds each, for a
    table holding one row per signed-in browser. Deleting through the session engine also drops a cached copy
    (the ``cached_db`` engine).
    """
    engine = import_module(settings.SESSION_ENGINE)
    ended = 0
    rows = Session.objects.filter(expire_date__gt=timezone.now()).values_list("session_key", "session_data")
    for session_key, session_data in rows.iterator(chunk_size=500):
        store = engine.SessionStore(session_key)
        if str(store.decode(session_data).get(SESSION_KEY)) == str(user.pk):
            store.delete()
            ended += 1
    return ended


def deactivate(user) -> int:
    """Make ``user`` inactive and end their sessions; their API keys are refused from now on. Returns the number
    of sessions ended. Recorded in the audit trail (the is_active change, then a "deprovision" record)."""
    with transaction.atomic():
        if user.is_active:
            user.is_active = False
            user.save(update_fields=["is_active"])
        ended = end_sessions(user)
        trail.append("user", "deprovision", object_id=user.pk, object_repr=user.get_username(),
                         changes={"sessions_ended": ended})
    return ended


def revoke_api_keys(user) -> int:
    """Revoke the user's API keys for good (one audit record each); returns how many were revoked."""
    revoked = 0
    for key in ApiKey.objects.active().filter(user=user):
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
        revoked += 1
    return revoked
