"""The audit table on PostgreSQL: no statement a session sends updates, deletes or truncates it, whatever it has SET;
only audit_prune_before() (what prune_audit_records calls) removes records, and it records that it did. Then the
two-role install of the README: a role that does not own the table cannot get past the trigger at all, and can prune
only when granted EXECUTE."""

import uuid
from datetime import timedelta

import psycopg
import pytest
from django.core.management import call_command
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from connectors.audit import trail
from connectors.audit.models import AuditRecord

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(connection.vendor != "postgresql", reason="the append-only trigger exists on PostgreSQL only"),
]

CHANGES = [
    "UPDATE audit_auditrecord SET actor = 'mallory'",
    "DELETE FROM audit_auditrecord",
    "TRUNCATE audit_auditrecord",
    "TRUNCATE audit_auditrecord RESTART IDENTITY CASCADE",
    "WITH gone AS (DELETE FROM audit_auditrecord RETURNING id) SELECT count(*) FROM gone",
    "MERGE INTO audit_auditrecord a USING (SELECT 1) s ON true WHEN MATCHED THEN DELETE",
    "DO $$ BEGIN EXECUTE 'DELETE FROM audit_auditrecord'; END $$",
]

# What a session could try first to get a DELETE or TRUNCATE through.
SETTINGS = [
    "SET LOCAL audit.allow_prune = 'on'",  # the escape of the previous trigger (migration audit/0002)
    "SET LOCAL session_replication_role = replica",  # turns ordinary triggers off for a superuser
]


def old_and_recent() -> tuple[AuditRecord, AuditRecord]:
    old = trail.append("connector", "create", object_id="old", at=timezone.now() - timedelta(days=400))
    return old, trail.append("connector", "create", object_id="recent")


def all_records() -> list[tuple]:
    return list(AuditRecord.objects.order_by("id").values_list("id", "at", "actor", "object_id"))


def refused(cursor, sql: str) -> str:
    with pytest.raises(DatabaseError) as refusal, transaction.atomic():
        cursor.execute(sql)
    return str(refusal.value)


@pytest.mark.parametrize("sql", CHANGES)
def test_no_statement_changes_or_removes_a_record(sql):
    old_and_recent()
    before = all_records()
    with connection.cursor() as cursor:
        assert "append-only" in refused(cursor, sql)
    assert all_records() == before


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("sql", ["DELETE FROM audit_auditrecord", "TRUNCATE audit_auditrecord",
                                 "UPDATE audit_auditrecord SET actor = 'mallory'"])
def test_no_setting_lets_a_statement_through(setting, sql):
    old_and_recent()
    before = all_records()
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(setting)
        cursor.execute(sql)
    assert all_records() == before


def test_a_look_alike_of_the_prune_function_is_refused():
    """A session can create a function of the same name in its temporary schema; PostgreSQL names it
    pg_temp_N.audit_prune_before, not the real one."""
    old_and_recent()
    before = all_records()
    with connection.cursor() as cursor:
        cursor.execute("CREATE FUNCTION pg_temp.audit_prune_before(day date) RETURNS bigint LANGUAGE plpgsql AS "
                       "$$ BEGIN DELETE FROM public.audit_auditrecord; RETURN 0; END $$")
        assert "append-only" in refused(cursor, "SELECT pg_temp.audit_prune_before(current_date)")
    assert all_records() == before


def test_the_prune_command_deletes_through_the_function_and_records_it():
    old, recent = old_and_recent()
    cutoff = (timezone.now() - timedelta(days=30)).date().isoformat()
    call_command("prune_audit_records", "--before", cutoff)
    assert not AuditRecord.objects.filter(pk=old.pk).exists()
    assert AuditRecord.objects.filter(pk=recent.pk).exists()
    ran = AuditRecord.objects.get(object_type="audit_trail", action="prune")
    with connection.cursor() as cursor:
        cursor.execute("SELECT session_user")
        role = cursor.fetchone()[0]
    assert ran.changes == {"before": cutoff, "deleted": 1, "database_role": role}
    assert (ran.actor, ran.via, ran.object_repr) == ("system", "command", "audit trail")


def test_the_prune_function_refuses_a_day_in_the_future():
    old_and_recent()
    before = all_records()
    with connection.cursor() as cursor:
        assert "in the future" in refused(cursor, "SELECT audit_prune_before(current_date + 2)")
    assert all_records() == before


@pytest.fixture
def app_role():
    """A role that logs in, is no superuser and does not own the table: the app's role of the two-role install,
    with every privilege on every table and the right to create in the schema (the trigger must hold even so). Roles belong to the whole cluster: the name
    is unique to this test run and the role is dropped afterwards."""
    name = f"audit_app_{uuid.uuid4().hex[:12]}"
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE ROLE {name} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE")
        cursor.execute(f"GRANT USAGE, CREATE ON SCHEMA public TO {name}")  # as before PostgreSQL 15, for everyone
        cursor.execute(f"GRANT ALL PRIVILEGES ON ALL TABLES IN SCHEMA public TO {name}")
        cursor.execute(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {name}")
    params = {**connection.get_connection_params(), "user": name}
    params.pop("password", None)
    try:
        with psycopg.connect(**params, autocommit=True) as app:
            yield name, app
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP OWNED BY {name}")  # its privileges in this database
            cursor.execute(f"DROP ROLE {name}")


@pytest.mark.django_db(transaction=True)
def test_a_role_that_does_not_own_the_table_cannot_get_past_the_trigger(app_role):
    name, app = app_role
    old, recent = old_and_recent()
    before = all_records()

    def refusal(sql: str) -> str:
        with pytest.raises(psycopg.Error) as error:
            app.execute(sql)
        return str(error.value)

    for sql in CHANGES:  # refused by the trigger, or before it by the sequence RESTART IDENTITY needs to own
        assert "append-only" in refusal(sql) or "RESTART IDENTITY" in sql
    for sql in ("ALTER TABLE audit_auditrecord DISABLE TRIGGER audit_record_append_only",
                "DROP TRIGGER audit_record_append_only ON audit_auditrecord",
                "CREATE OR REPLACE FUNCTION public.audit_prune_before(day date) RETURNS bigint LANGUAGE sql "
                "AS 'SELECT 0::bigint'"):
        assert "must be owner" in refusal(sql)
    assert "permission denied" in refusal("SET session_replication_role = replica")
    assert "permission denied" in refusal("SELECT audit_prune_before(current_date)")  # not granted to PUBLIC
    assert all_records() == before

    app.execute("INSERT INTO audit_auditrecord (at, actor, api_key_name, via, user_agent, object_type, object_id, "
                "object_repr, action, changes) VALUES (now(), 'system', '', 'system', '', 'connector', 'x', '', "
                "'create', '{}')")  # the app still writes its records
    assert len(all_records()) == len(before) + 1

    with connection.cursor() as cursor:
        cursor.execute(f"GRANT EXECUTE ON FUNCTION audit_prune_before(date) TO {name}")
    cutoff = (timezone.now() - timedelta(days=30)).date()
    assert app.execute("SELECT audit_prune_before(%s)", [cutoff]).fetchone() == (1,)
    assert not AuditRecord.objects.filter(pk=old.pk).exists()
    ran = AuditRecord.objects.get(action="prune")
    assert ran.changes == {"before": cutoff.isoformat(), "deleted": 1, "database_role": name}
