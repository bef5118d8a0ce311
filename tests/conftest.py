"""Shared fixtures: the personas, a real OpenAI-shaped server, connector factories, the event writer, networking
settings."""

import base64
import gc
import logging
from unittest import mock

import pytest
from django.contrib.auth.models import Group
from django.test import override_settings

from connectors.actions_config import parse_actions_config
from connectors.audit.sign_ins import forget_failures
from connectors.caching.invalidation import forget_everything
from connectors.models import Connector, Provider
from tests.servers.fake_openai import FakeOpenAI
from usage.recording import writer as recording

PASSWORD = "correct horse battery staple"

pytest_plugins = ["tests.browser.fixtures", "tests.servers.asgi_server"]


def make_user(django_user_model, username: str, *groups: str, superuser: bool = False):
    if superuser:
        return django_user_model.objects.create_superuser(username, f"{username}@example.com", PASSWORD)
    user = django_user_model.objects.create_user(username, f"{username}@example.com", PASSWORD)
    for name in groups:
        user.groups.add(Group.objects.get(name=name))
    return user


@pytest.fixture
def admin_user(django_user_model):
    return make_user(django_user_model, "root", superuser=True)


@pytest.fixture
def connector_admin(django_user_model):
    return make_user(django_user_model, "ada", "Connector admins")


@pytest.fixture
def operator(django_user_model):
    return make_user(django_user_model, "olivia", "Connector users")


@pytest.fixture
def analyst(django_user_model):
    return make_user(django_user_model, "ann", "Usage viewers")


@pytest.fixture
def outsider(django_user_model):
    return make_user(django_user_model, "otto")


@pytest.fixture
def personas(admin_user, connector_admin, operator, analyst, outsider):
    return {"admin": admin_user, "connector_admin": connector_admin, "operator": operator, "analyst": analyst, "outsider": outsider}


def basic_auth(user_or_name, password: str = PASSWORD) -> str:
    name = getattr(user_or_name, "username", user_or_name)
    return "Basic " + base64.b64encode(f"{name}:{password}".encode()).decode()


@pytest.fixture(autouse=True, scope="session")
def _static_files_without_collectstatic():
    """Production uses whitenoise's manifest storage after collectstatic; tests serve from the source folders."""
    override = override_settings(
        STORAGES={
            "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
            "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
        },
        WHITENOISE_USE_FINDERS=True,
        WHITENOISE_AUTOREFRESH=True,
        # Tests create many users; the production hasher would spend most of the suite's time hashing.
        PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"],
    )
    override.enable()
    yield
    override.disable()


@pytest.fixture(autouse=True, scope="session")
def _flush_may_empty_the_audit_trail():
    """Between transactional tests Django empties every table. On PostgreSQL the test database does it with a
    DELETE per table instead of Django's one TRUNCATE: TRUNCATE gives each table, partition and index a new file
    (about 0.4 s for this schema, once per transactional test), where deleting the few rows a test left takes
    milliseconds; the foreign keys are deferred (Django makes them DEFERRABLE) and checked at the flush's commit.
    The audit table's append-only trigger (migration audit/0003) refuses that DELETE, so the test database, and only
    it, turns the trigger off in the flush's own transaction (ALTER TABLE is transactional: no other session ever
    sees the trigger off); the tests connect as the table's owner, who may do that."""
    from django.db.backends.postgresql.operations import DatabaseOperations

    truncate = DatabaseOperations.sql_flush

    def sql_flush(self, style, tables, *, reset_sequences=False, allow_cascade=False):
        if reset_sequences or allow_cascade:
            statements = truncate(self, style, tables, reset_sequences=reset_sequences, allow_cascade=allow_cascade)
        else:
            # The rollups first: deleting them makes their triggers write to the summaries, emptied after.
            ordered = sorted(tables, key=lambda table: (table != "usage_usagerollup", table))
            statements = ["SET CONSTRAINTS ALL DEFERRED", *(f"DELETE FROM {self.quote_name(table)}" for table in ordered)]
        if "audit_auditrecord" not in tables:
            return statements
        return ["ALTER TABLE audit_auditrecord DISABLE TRIGGER audit_record_append_only", *statements,
                "ALTER TABLE audit_auditrecord ENABLE ALWAYS TRIGGER audit_record_append_only"]

    with mock.patch.object(DatabaseOperations, "sql_flush", sql_flush):
        yield


@pytest.fixture
def shipped_prices(db):
    """The list prices migration governance/0002 loads. A transactional test's flush empties the price table for
    the tests after it in the same process, so they are loaded again when missing (get_or_create: never twice)."""
    from usage.governance.models import Price
    from usage.governance.pricing.shipped_prices import load_price_file

    load_price_file(Price, "prices-2026-11-29.yaml")


@pytest.fixture(autouse=True)
def _garbage_collector_as_it_was():
    """A test that runs the ASGI lifespan's start-up in this process also settles its garbage collector as a server's
    (connectors_admin/worker_warm_up.py): everything then loaded frozen, the youngest generation's threshold raised.
    Undone after it, so that the other tests run with the collector as Python sets it."""
    threshold = gc.get_threshold()
    yield
    if gc.get_freeze_count():
        gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.fixture(autouse=True)
def _fresh_caches():
    """Each test starts with empty per-process caches (verified credentials, connectors, known login locks,
    failed sign-in counts of the audit trail, whether the database is known to be down)."""
    from connectors.throttling.failures import forget_locks
    from connectors_admin.database_availability import availability

    forget_everything()
    forget_locks()
    forget_failures()
    availability.reset()
    yield
    forget_everything()
    forget_locks()
    forget_failures()
    availability.reset()


@pytest.fixture(scope="session")
def upstream():
    """A real OpenAI-shaped server on a loopback port, for the whole test session."""
    server = FakeOpenAI().start()
    yield server
    server.stop()


@pytest.fixture
def fake_openai(upstream):
    upstream.clear()
    return upstream


@pytest.fixture
def make_connector(db, admin_user):
    def make(**fields) -> Connector:
        api_key = fields.pop("api_key", "sk-test-secret-key-1234567890")
        defaults = {"name": "Test connector", "provider": Provider.OPENAI, "api_url": "https://api.openai.com/v1/chat/completions"}
        connector = Connector(**{**defaults, **fields}, created_by=admin_user)
        connector.api_key = api_key
        connector.full_clean()
        connector.save()
        return connector

    return make


@pytest.fixture
def event_writer():
    """This process's event writer (the one a production server's lifespan starts), started for one test; after it,
    stopped once everything queued is written. Idempotent with asgi_live_server's, which starts the same writer."""
    writer = recording.start_event_writer()
    yield writer
    recording.stop_event_writer(timeout=10)


@pytest.fixture
def actions_config(settings):
    """Replace the networking settings for one test: ``actions_config({"allowedHosts": [...]})``."""

    def apply(raw: dict):
        settings.ACTIONS_CONFIG = parse_actions_config(raw)
        return settings.ACTIONS_CONFIG

    return apply


@pytest.fixture
def debug_logs(caplog):
    """Capture every logger at DEBUG (httpx and httpcore included), so a leaked secret would show up."""
    caplog.set_level(logging.DEBUG)
    return caplog
