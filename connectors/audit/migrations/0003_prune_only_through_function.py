"""On PostgreSQL, the audit table refuses UPDATE, DELETE and TRUNCATE from every session, whatever it has SET;
records leave only through ``audit_prune_before(day)``, which also records that it ran (README "Audit trail").

How the trigger tells the prune function's DELETE from any other: PL/pgSQL's call stack (``PG_CONTEXT``). A
statement sent by a client has no frame; one run from a DO block or a function has that block's or function's frame
as the outermost one. The DELETE passes only when the outermost frame is ``<schema>.audit_prune_before(date)``
(both functions run with ``search_path = pg_catalog, pg_temp``, so PostgreSQL names it schema-qualified and a
look-alike in ``pg_temp`` or another schema shows a different name). Making a function with that very name means
replacing this one, which only the function's owner can do: the same DDL that could drop the trigger. No setting
changes the answer, and the trigger fires ``ALWAYS``, so ``session_replication_role = replica`` does not turn it off.

``audit_prune_before`` is ``SECURITY DEFINER``: it runs as its owner (the role that ran this migration), so a role
that may only SELECT and INSERT on the table can prune when it is granted EXECUTE; PUBLIC is not.

SQLite has no such guard (the app itself never updates or deletes a record; see connectors/audit/trail.py).
"""

from django.db import migrations

TABLE = "audit_auditrecord"

CREATE = """
CREATE OR REPLACE FUNCTION {schema}.audit_record_append_only() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    stack text;
BEGIN
    IF TG_OP = 'DELETE' THEN
        GET DIAGNOSTICS stack = PG_CONTEXT;
        IF starts_with(split_part(stack, E'\\n', -1), {prune_frame}) THEN
            RETURN NULL;
        END IF;
    END IF;
    RAISE EXCEPTION 'audit records are append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'Old records are removed with manage.py prune_audit_records.';
END;
$$;

CREATE OR REPLACE FUNCTION {schema}.audit_prune_before(day date) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    deleted bigint;
BEGIN
    IF day IS NULL OR (day::timestamp AT TIME ZONE 'UTC') > now() THEN
        RAISE EXCEPTION 'audit_prune_before: % is in the future; that would delete records of today', day
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    DELETE FROM {schema}.{table} WHERE at < (day::timestamp AT TIME ZONE 'UTC');
    GET DIAGNOSTICS deleted = ROW_COUNT;
    INSERT INTO {schema}.{table}
        (at, actor, api_key_name, via, user_agent, object_type, object_id, object_repr, action, changes)
    VALUES (now(), 'system', '', 'command', '', 'audit_trail', '', 'audit trail', 'prune',
            jsonb_build_object('before', to_char(day, 'YYYY-MM-DD'), 'deleted', deleted,
                               'database_role', session_user::text));
    RETURN deleted;
END;
$$;
REVOKE ALL ON FUNCTION {schema}.audit_prune_before(date) FROM PUBLIC;

DROP TRIGGER IF EXISTS audit_record_append_only ON {schema}.{table};
CREATE TRIGGER audit_record_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON {schema}.{table}
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.audit_record_append_only();
ALTER TABLE {schema}.{table} ENABLE ALWAYS TRIGGER audit_record_append_only;
"""

# Back to migration 0002's state: a row trigger on UPDATE and DELETE that a transaction-local setting lets through.
REVERSE = """
DROP FUNCTION IF EXISTS {schema}.audit_prune_before(date);
DROP TRIGGER IF EXISTS audit_record_append_only ON {schema}.{table};
CREATE OR REPLACE FUNCTION {schema}.audit_record_append_only() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('audit.allow_prune', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit records are append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER audit_record_append_only
    BEFORE UPDATE OR DELETE ON {schema}.{table}
    FOR EACH ROW EXECUTE FUNCTION {schema}.audit_record_append_only();
"""


def _on_postgresql(sql: str):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor != "postgresql":
            return
        with schema_editor.connection.cursor() as cursor:
            cursor.execute("SELECT quote_ident(current_schema())")
            schema = cursor.fetchone()[0]
            # How PL/pgSQL names the prune function's frame in PG_CONTEXT, as an SQL string literal.
            cursor.execute("SELECT quote_literal(%s)", [f"PL/pgSQL function {schema}.audit_prune_before(date) line "])
            prune_frame = cursor.fetchone()[0]
            # no parameters: the '%' of RAISE stays as it is
            cursor.execute(sql.format(schema=schema, table=TABLE, prune_frame=prune_frame))

    return run


class Migration(migrations.Migration):
    dependencies = [("audit", "0002_append_only_trigger")]

    operations = [migrations.RunPython(_on_postgresql(CREATE), _on_postgresql(REVERSE))]
