"""Summaries of UsageRollup kept exact by triggers (see usage/models/summaries.py for why), and their backfill.

The triggers add every change to a usage_usagerollup row (insert, update or delete) to usage_usagehourlytotal and
usage_usagedailyrollup in the same transaction, with an upsert that adds in SQL, so concurrent writers never lose
a count. Column lists are spelled out here so that this migration does not change when the models do.
"""

from typing import NamedTuple

from django.db import migrations, models


ROLLUP = "usage_usagerollup"
HOURLY = "usage_usagehourlytotal"
DAILY = "usage_usagedailyrollup"
BINS = tuple(f"latency_bin_{i}" for i in range(16))
HOURLY_KEY = ("connector_id", "bucket", "outcome")
HOURLY_SUMS = (
    "requests", "prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens", "reasoning_tokens",
    "estimated_requests", "duration_ms_sum",
) + BINS
DAILY_KEY = ("connector_id", "day", "model", "user_name", "outcome")
DAILY_SUMS = ("requests", "prompt_tokens", "completion_tokens", "total_tokens")
ROLLUP_KEY = ("connector_id", "bucket", "model", "user_name", "outcome")


class Keys(NamedTuple):
    """The key columns of the rollups and of each summary ("day" in a summary key is its rollup's bucket truncated
    to the UTC day). Parameters, like the sum columns, so that a later migration changing a key can recreate the
    triggers with it."""

    rollup: tuple[str, ...] = ROLLUP_KEY
    hourly: tuple[str, ...] = HOURLY_KEY
    daily: tuple[str, ...] = DAILY_KEY


KEYS = Keys()


def _day(vendor: str, bucket: str) -> str:
    if vendor == "postgresql":
        return f"date_trunc('day', {bucket}, 'UTC')"
    # SQLite stores datetimes as 'YYYY-MM-DD HH:MM:SS' text in UTC.
    return f"substr({bucket}, 1, 10) || ' 00:00:00'"


def _key_value(vendor: str, column: str, row: str = "") -> str:
    """The value of a summary key's ``column`` in the rollup row ``row`` (NEW/OLD; "": the rollup table's own)."""
    prefix = f"{row}." if row else ""
    return _day(vendor, f"{prefix}bucket") if column == "day" else f"{prefix}{column}"


def _summary_rows(vendor: str, row: str, hourly_sums=HOURLY_SUMS, daily_sums=DAILY_SUMS, keys: Keys = KEYS):
    """(table, key columns, sum columns, key values) of the two summary rows of the rollup row ``row`` (NEW/OLD).

    The sum columns are parameters so that a later migration adding a column can recreate the triggers with it.
    """
    return (
        (HOURLY, keys.hourly, hourly_sums, [_key_value(vendor, column, row) for column in keys.hourly]),
        (DAILY, keys.daily, daily_sums, [_key_value(vendor, column, row) for column in keys.daily]),
    )


def _upserts(vendor: str, row: str, amount, hourly_sums=HOURLY_SUMS, daily_sums=DAILY_SUMS, keys: Keys = KEYS) -> list[str]:
    """Add ``amount(column)`` to the summary rows of ``row``, creating them if needed."""
    statements = []
    for table, key, sums, key_values in _summary_rows(vendor, row, hourly_sums, daily_sums, keys):
        columns = ", ".join(key + sums)
        values = ", ".join(key_values + [amount(column) for column in sums])
        updates = ", ".join(f"{column} = {table}.{column} + excluded.{column}" for column in sums)
        statements.append(
            f"INSERT INTO {table} ({columns}) VALUES ({values}) ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates};"
        )
    return statements


def _subtracts(vendor: str, row: str, hourly_sums=HOURLY_SUMS, daily_sums=DAILY_SUMS, keys: Keys = KEYS) -> list[str]:
    """Take ``row``'s sums off its summary rows. An UPDATE, not an upsert: when the summary rows are gone already
    (a test database flush on SQLite deletes table by table, in no fixed order) there is nothing to take off."""
    statements = []
    for table, key, sums, key_values in _summary_rows(vendor, row, hourly_sums, daily_sums, keys):
        updates = ", ".join(f"{column} = {column} - {row}.{column}" for column in sums)
        where = " AND ".join(f"{column} = {value}" for column, value in zip(key, key_values, strict=True))
        statements.append(f"UPDATE {table} SET {updates} WHERE {where};")
    return statements


def _pg_grouped_upserts(sources: tuple[str, ...], hourly_sums=HOURLY_SUMS, daily_sums=DAILY_SUMS, keys: Keys = KEYS) -> list[str]:
    """For PostgreSQL: add the net change of the rows in the transition tables ``sources`` to both summaries."""
    statements = []
    for table, key, sums in ((HOURLY, keys.hourly, hourly_sums), (DAILY, keys.daily, daily_sums)):
        selected = ", ".join(f"{_key_value('postgresql', name)} AS {name}" for name in key)
        parts = []
        for source in sources:
            sign = "" if source == "new_rows" else "-"
            parts.append(f"SELECT {selected}, {', '.join(f'{sign}{c} AS {c}' for c in sums)} FROM {source}")
        key_list = ", ".join(key)
        updates = ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in sums)
        statements.append(
            f"INSERT INTO {table} ({key_list}, {', '.join(sums)}) "
            f"SELECT {key_list}, {', '.join(f'SUM({c})' for c in sums)} FROM ({' UNION ALL '.join(parts)}) AS changes "
            f"GROUP BY {key_list} ORDER BY {key_list} "
            f"ON CONFLICT ({key_list}) DO UPDATE SET {updates};"
        )
    return statements


def _same_key(keys: Keys = KEYS) -> str:
    return " AND ".join(f"NEW.{column} = OLD.{column}" for column in keys.rollup)


def _add_new(column: str) -> str:
    return f"NEW.{column}"


def _delta(column: str) -> str:
    return f"NEW.{column} - OLD.{column}"


def _backfill(vendor: str, hourly_sums=HOURLY_SUMS, daily_sums=DAILY_SUMS, keys: Keys = KEYS) -> list[str]:
    """Fill both (empty) summaries from the rollups."""
    statements = []
    for table, key, sums in ((HOURLY, keys.hourly, hourly_sums), (DAILY, keys.daily, daily_sums)):
        grouped = ", ".join(_key_value(vendor, column) for column in key)
        statements.append(
            f"INSERT INTO {table} ({', '.join(key + sums)}) "
            f"SELECT {grouped}, {', '.join(f'SUM({c})' for c in sums)} FROM {ROLLUP} GROUP BY {grouped}"
        )
    return statements


def _create_triggers(vendor: str, hourly_sums=HOURLY_SUMS, daily_sums=DAILY_SUMS, keys: Keys = KEYS) -> list[str]:
    sums = (hourly_sums, daily_sums)
    if vendor == "postgresql":
        # Statement-level triggers over transition tables: one grouped upsert per summary and statement, rows taken
        # in key order so that concurrent writers lock summary rows in the same order (no deadlocks), and a
        # rebuild's thousands of rollup rows become a few hundred summary upserts rather than one per row.
        statements = []
        for event, sources in (("INSERT", ("new_rows",)), ("UPDATE", ("new_rows", "old_rows")), ("DELETE", ("old_rows",))):
            name = f"usage_rollup_{event.lower()}_summaries"
            body = "\n".join(_pg_grouped_upserts(sources, *sums, keys=keys))
            statements.append(f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$\nBEGIN\n{body}\nRETURN NULL;\nEND $$;")
            referencing = " ".join(
                f"{'NEW' if source == 'new_rows' else 'OLD'} TABLE AS {source}" for source in sources
            )
            statements.append(
                f"CREATE TRIGGER {name} AFTER {event} ON {ROLLUP} REFERENCING {referencing} "
                f"FOR EACH STATEMENT EXECUTE FUNCTION {name}();"
            )
        return statements
    if vendor == "sqlite":
        # SQLite triggers have no IF: one trigger per case.
        return [
            f"CREATE TRIGGER usage_rollup_insert AFTER INSERT ON {ROLLUP} BEGIN {' '.join(_upserts(vendor, 'NEW', _add_new, *sums, keys))} END;",
            f"CREATE TRIGGER usage_rollup_delete AFTER DELETE ON {ROLLUP} BEGIN {' '.join(_subtracts(vendor, 'OLD', *sums, keys))} END;",
            f"CREATE TRIGGER usage_rollup_update AFTER UPDATE ON {ROLLUP} WHEN {_same_key(keys)} "
            f"BEGIN {' '.join(_upserts(vendor, 'NEW', _delta, *sums, keys))} END;",
            f"CREATE TRIGGER usage_rollup_rekey AFTER UPDATE ON {ROLLUP} WHEN NOT ({_same_key(keys)}) "
            f"BEGIN {' '.join(_subtracts(vendor, 'OLD', *sums, keys) + _upserts(vendor, 'NEW', _add_new, *sums, keys))} END;",
        ]
    raise NotImplementedError(f"usage rollup summaries need triggers written for {vendor}")


def _drop_triggers(vendor: str) -> list[str]:
    if vendor == "postgresql":
        statements = []
        for event in ("insert", "update", "delete"):
            name = f"usage_rollup_{event}_summaries"
            statements += [f"DROP TRIGGER IF EXISTS {name} ON {ROLLUP}", f"DROP FUNCTION IF EXISTS {name}()"]
        return statements
    return [f"DROP TRIGGER IF EXISTS usage_rollup_{name}" for name in ("insert", "delete", "update", "rekey")]


def create_triggers(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    for statement in _backfill(vendor) + _create_triggers(vendor):
        schema_editor.execute(statement, params=None)


def drop_triggers(apps, schema_editor):
    for statement in _drop_triggers(schema_editor.connection.vendor):
        schema_editor.execute(statement, params=None)


class Migration(migrations.Migration):

    dependencies = [
        ('usage', '0001_initial'),
    ]

    operations = [
        migrations.CreateModel(
            name='UsageDailyRollup',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('connector_id', models.CharField(max_length=64)),
                ('day', models.DateTimeField(help_text='Midnight UTC starting the day.')),
                ('model', models.CharField(blank=True, max_length=255)),
                ('user_name', models.CharField(blank=True, max_length=150)),
                ('outcome', models.CharField(choices=[('success', 'Success'), ('failure', 'Failure')], max_length=8)),
                ('requests', models.BigIntegerField(default=0)),
                ('prompt_tokens', models.BigIntegerField(default=0)),
                ('completion_tokens', models.BigIntegerField(default=0)),
                ('total_tokens', models.BigIntegerField(default=0)),
            ],
            options={
                'default_permissions': (),
                'constraints': [models.UniqueConstraint(fields=('connector_id', 'day', 'model', 'user_name', 'outcome'), name='daily_rollup_key')],
            },
        ),
        migrations.CreateModel(
            name='UsageHourlyTotal',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('connector_id', models.CharField(max_length=64)),
                ('bucket', models.DateTimeField(help_text='Start of the hour (UTC).')),
                ('outcome', models.CharField(choices=[('success', 'Success'), ('failure', 'Failure')], max_length=8)),
                ('requests', models.BigIntegerField(default=0)),
                ('prompt_tokens', models.BigIntegerField(default=0)),
                ('completion_tokens', models.BigIntegerField(default=0)),
                ('total_tokens', models.BigIntegerField(default=0)),
                ('cached_tokens', models.BigIntegerField(default=0)),
                ('reasoning_tokens', models.BigIntegerField(default=0)),
                ('estimated_requests', models.BigIntegerField(default=0)),
                ('duration_ms_sum', models.FloatField(default=0)),
                ('latency_bin_0', models.BigIntegerField(default=0)),
                ('latency_bin_1', models.BigIntegerField(default=0)),
                ('latency_bin_2', models.BigIntegerField(default=0)),
                ('latency_bin_3', models.BigIntegerField(default=0)),
                ('latency_bin_4', models.BigIntegerField(default=0)),
                ('latency_bin_5', models.BigIntegerField(default=0)),
                ('latency_bin_6', models.BigIntegerField(default=0)),
                ('latency_bin_7', models.BigIntegerField(default=0)),
                ('latency_bin_8', models.BigIntegerField(default=0)),
                ('latency_bin_9', models.BigIntegerField(default=0)),
                ('latency_bin_10', models.BigIntegerField(default=0)),
                ('latency_bin_11', models.BigIntegerField(default=0)),
                ('latency_bin_12', models.BigIntegerField(default=0)),
                ('latency_bin_13', models.BigIntegerField(default=0)),
                ('latency_bin_14', models.BigIntegerField(default=0)),
                ('latency_bin_15', models.BigIntegerField(default=0)),
            ],
            options={
                'default_permissions': (),
                'constraints': [models.UniqueConstraint(fields=('connector_id', 'bucket', 'outcome'), name='hourly_total_key')],
            },
        ),
        migrations.RunPython(create_triggers, drop_triggers),
    ]
