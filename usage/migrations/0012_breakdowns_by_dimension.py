"""Per-dimension summaries of UsageRollup for the unsliced breakdowns (usage/models/summaries.py says why), kept
exact by triggers of their own on the rollups, as migration 0002's summaries are, and filled from the rollups here.

Each rollup row counts three times: once under its user, once under its model, once under its API key (its id as
text). Column lists are spelled out so that this migration does not change when the models do.
"""

import importlib

from django.db import migrations, models

_summaries = importlib.import_module("usage.migrations.0002_rollup_summaries")

ROLLUP = "usage_usagerollup"
HOURLY = "usage_usagedimensionhourly"
DAILY = "usage_usagedimensiondaily"
DIMENSIONS = ("user_name", "model", "api_key_id")
SUMS = ("requests", "prompt_tokens", "completion_tokens", "total_tokens", "estimated_requests", "cost_nanos",
        "unpriced_requests")
ROLLUP_KEY = ("connector_id", "space_id", "bucket", "model", "user_name", "api_key_id", "outcome")
TABLES = ((HOURLY, "bucket"), (DAILY, "day"))


def _key(time_column: str) -> tuple[str, ...]:
    return ("connector_id", "space_id", "dimension", time_column, "value", "outcome")


def _key_values(vendor: str, time_column: str, dimension: str, row: str = "") -> list[str]:
    """The summary key of one dimension of the rollup row ``row`` (NEW/OLD; "": the row of a FROM)."""
    prefix = f"{row}." if row else ""
    time_value = f"{prefix}bucket" if time_column == "bucket" else _summaries._day(vendor, f"{prefix}bucket")
    value = f"CAST({prefix}api_key_id AS TEXT)" if dimension == "api_key_id" else f"{prefix}{dimension}"
    return [f"{prefix}connector_id", f"{prefix}space_id", f"'{dimension}'", time_value, value, f"{prefix}outcome"]


def _changes(vendor: str, time_column: str, sources: tuple[str, ...]) -> str:
    """Every dimension's row of every rollup row in ``sources`` (tables; old_rows counted negative)."""
    parts = []
    for source in sources:
        sign = "-" if source == "old_rows" else ""
        for dimension in DIMENSIONS:
            keys = ", ".join(f"{value} AS {column}" for value, column in
                             zip(_key_values(vendor, time_column, dimension), _key(time_column), strict=True))
            parts.append(f"SELECT {keys}, {', '.join(f'{sign}{c} AS {c}' for c in SUMS)} FROM {source}")
    return " UNION ALL ".join(parts)


def _grouped_insert(vendor: str, table: str, time_column: str, sources: tuple[str, ...], *, upsert: bool) -> str:
    key = ", ".join(_key(time_column))
    statement = (f"INSERT INTO {table} ({key}, {', '.join(SUMS)}) "
                 f"SELECT {key}, {', '.join(f'SUM({c})' for c in SUMS)} "
                 f"FROM ({_changes(vendor, time_column, sources)}) AS changes GROUP BY {key}")
    if not upsert:
        return statement
    # Key order: concurrent writers lock the summary rows in the same order (no deadlocks).
    updates = ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in SUMS)
    return f"{statement} ORDER BY {key} ON CONFLICT ({key}) DO UPDATE SET {updates};"


def _row_upserts(vendor: str, row: str, amount) -> list[str]:
    """SQLite: add ``amount(column)`` of the rollup row ``row`` to its three rows in each table."""
    statements = []
    for table, time_column in TABLES:
        updates = ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in SUMS)
        for dimension in DIMENSIONS:
            values = ", ".join(_key_values(vendor, time_column, dimension, row) + [amount(c) for c in SUMS])
            statements.append(f"INSERT INTO {table} ({', '.join(_key(time_column) + SUMS)}) VALUES ({values}) "
                              f"ON CONFLICT ({', '.join(_key(time_column))}) DO UPDATE SET {updates};")
    return statements


def _row_subtracts(vendor: str, row: str) -> list[str]:
    """SQLite: take the rollup row ``row`` off its rows (an UPDATE: a test flush may have emptied the summaries
    first, as migration 0002 explains)."""
    statements = []
    for table, time_column in TABLES:
        updates = ", ".join(f"{c} = {c} - {row}.{c}" for c in SUMS)
        for dimension in DIMENSIONS:
            where = " AND ".join(f"{column} = {value}" for column, value in
                                 zip(_key(time_column), _key_values(vendor, time_column, dimension, row), strict=True))
            statements.append(f"UPDATE {table} SET {updates} WHERE {where};")
    return statements


def _same_key() -> str:
    return " AND ".join(f"NEW.{column} = OLD.{column}" for column in ROLLUP_KEY)


def create_triggers(vendor: str) -> list[str]:
    if vendor == "postgresql":
        # As migration 0002's: statement-level, over the transition tables, one grouped upsert per table.
        statements = []
        for event, sources in (("INSERT", ("new_rows",)), ("UPDATE", ("new_rows", "old_rows")), ("DELETE", ("old_rows",))):
            name = f"usage_rollup_{event.lower()}_dimensions"
            body = "\n".join(_grouped_insert(vendor, table, time_column, sources, upsert=True)
                             for table, time_column in TABLES)
            statements.append(f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$\nBEGIN\n{body}\nRETURN NULL;\nEND $$;")
            referencing = " ".join(f"{'NEW' if s == 'new_rows' else 'OLD'} TABLE AS {s}" for s in sources)
            statements.append(f"CREATE TRIGGER {name} AFTER {event} ON {ROLLUP} REFERENCING {referencing} "
                              f"FOR EACH STATEMENT EXECUTE FUNCTION {name}();")
        return statements
    if vendor == "sqlite":
        return [
            f"CREATE TRIGGER usage_rollup_insert_dimensions AFTER INSERT ON {ROLLUP} "
            f"BEGIN {' '.join(_row_upserts(vendor, 'NEW', lambda c: f'NEW.{c}'))} END;",
            f"CREATE TRIGGER usage_rollup_delete_dimensions AFTER DELETE ON {ROLLUP} "
            f"BEGIN {' '.join(_row_subtracts(vendor, 'OLD'))} END;",
            f"CREATE TRIGGER usage_rollup_update_dimensions AFTER UPDATE ON {ROLLUP} WHEN {_same_key()} "
            f"BEGIN {' '.join(_row_upserts(vendor, 'NEW', lambda c: f'NEW.{c} - OLD.{c}'))} END;",
            f"CREATE TRIGGER usage_rollup_rekey_dimensions AFTER UPDATE ON {ROLLUP} WHEN NOT ({_same_key()}) "
            f"BEGIN {' '.join(_row_subtracts(vendor, 'OLD') + _row_upserts(vendor, 'NEW', lambda c: f'NEW.{c}'))} END;",
        ]
    raise NotImplementedError(f"usage dimension summaries need triggers written for {vendor}")


def drop_triggers(vendor: str) -> list[str]:
    if vendor == "postgresql":
        statements = []
        for event in ("insert", "update", "delete"):
            name = f"usage_rollup_{event}_dimensions"
            statements += [f"DROP TRIGGER IF EXISTS {name} ON {ROLLUP}", f"DROP FUNCTION IF EXISTS {name}()"]
        return statements
    return [f"DROP TRIGGER IF EXISTS usage_rollup_{name}_dimensions" for name in ("insert", "delete", "update", "rekey")]


def fill_and_keep_filled(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    statements = [_grouped_insert(vendor, table, time_column, (ROLLUP,), upsert=False) for table, time_column in TABLES]
    for statement in statements + create_triggers(vendor):
        schema_editor.execute(statement, params=None)


def stop_filling(apps, schema_editor):
    for statement in drop_triggers(schema_editor.connection.vendor):
        schema_editor.execute(statement, params=None)



class Migration(migrations.Migration):

    dependencies = [
        ('usage', '0011_drop_event_space_connector'),
    ]

    operations = [
        migrations.CreateModel(
            name='UsageDimensionDaily',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('connector_id', models.CharField(max_length=64)),
                ('space_id', models.CharField(default='default', max_length=64)),
                ('dimension', models.CharField(choices=[('user_name', 'user_name'), ('model', 'model'), ('api_key_id', 'api_key_id')], max_length=16)),
                ('value', models.CharField(blank=True, max_length=255)),
                ('outcome', models.CharField(choices=[('success', 'Success'), ('failure', 'Failure')], max_length=8)),
                ('requests', models.BigIntegerField(default=0)),
                ('prompt_tokens', models.BigIntegerField(default=0)),
                ('completion_tokens', models.BigIntegerField(default=0)),
                ('total_tokens', models.BigIntegerField(default=0)),
                ('estimated_requests', models.BigIntegerField(default=0)),
                ('cost_nanos', models.BigIntegerField(default=0)),
                ('unpriced_requests', models.BigIntegerField(default=0)),
                ('day', models.DateTimeField(help_text='Midnight UTC starting the day.')),
            ],
            options={
                'default_permissions': (),
                'indexes': [models.Index(fields=['space_id', 'dimension', 'day'], name='dimension_daily_space')],
                'constraints': [models.UniqueConstraint(fields=('connector_id', 'space_id', 'dimension', 'day', 'value', 'outcome'), name='dimension_daily_key')],
            },
        ),
        migrations.CreateModel(
            name='UsageDimensionHourly',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('connector_id', models.CharField(max_length=64)),
                ('space_id', models.CharField(default='default', max_length=64)),
                ('dimension', models.CharField(choices=[('user_name', 'user_name'), ('model', 'model'), ('api_key_id', 'api_key_id')], max_length=16)),
                ('value', models.CharField(blank=True, max_length=255)),
                ('outcome', models.CharField(choices=[('success', 'Success'), ('failure', 'Failure')], max_length=8)),
                ('requests', models.BigIntegerField(default=0)),
                ('prompt_tokens', models.BigIntegerField(default=0)),
                ('completion_tokens', models.BigIntegerField(default=0)),
                ('total_tokens', models.BigIntegerField(default=0)),
                ('estimated_requests', models.BigIntegerField(default=0)),
                ('cost_nanos', models.BigIntegerField(default=0)),
                ('unpriced_requests', models.BigIntegerField(default=0)),
                ('bucket', models.DateTimeField(help_text='Start of the hour (UTC).')),
            ],
            options={
                'default_permissions': (),
                'indexes': [models.Index(fields=['space_id', 'dimension', 'bucket'], name='dimension_hourly_space')],
                'constraints': [models.UniqueConstraint(fields=('connector_id', 'space_id', 'dimension', 'bucket', 'value', 'outcome'), name='dimension_hourly_key')],
            },
        ),
        migrations.RunPython(fill_and_keep_filled, stop_filling),
    ]
