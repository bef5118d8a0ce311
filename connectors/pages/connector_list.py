"""The connector list's rows: search, provider filter, sort on every column, with each row's recent usage.

The list holds every connector (preconfigured ones come from ACTIONS_CONFIG, not the database), so searching and
sorting happen in Python over the few hundred connectors an installation has; the usage figures come from the
rollups in one query for all of them (usage.dashboards.connector_figures), and the last executions in one query for the
rows shown (or for all of them when sorting by it).
"""

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from connectors.lookup import all_connectors
from connectors.models import Connector, Provider
from usage.dashboards.connector_figures import LastExecution, RecentUsage, last_executions, usage_last_24_hours

PAGE_SIZE = 25
# Sort keys of the query string (``sort=name``, ``sort=-requests``) and the column each one orders. "(24 h)" is
# kept on one line when a heading wraps.
SORT_COLUMNS = {
    "name": "Name",
    "provider": "Provider",
    "host": "Host",
    "model": "Default model",
    "requests": "Requests (24\u00a0h)",
    "tokens": "Tokens (24\u00a0h)",
    "error_rate": "Error rate (24\u00a0h)",
    "last": "Last execution",
    "created": "Created",
}
DEFAULT_SORT = "name"
ID_SUFFIX_LENGTH = 6


@dataclass
class ConnectorRow:
    connector: Connector
    recent: RecentUsage = field(default_factory=RecentUsage)
    last: LastExecution | None = None
    duplicate_name: bool = False

    @property
    def id_suffix(self) -> str:
        return self.connector.pk[-ID_SUFFIX_LENGTH:]


def _matches(connector: Connector, words: str) -> bool:
    haystack = " ".join((connector.name, connector.api_host, connector.effective_default_model)).lower()
    return all(word in haystack for word in words.lower().split())


_EPOCH = datetime.min


def _sort_value(row: ConnectorRow, key: str):
    connector = row.connector
    # Empty values sort last whatever the direction: (has_value, value) pairs, reversed for descending.
    return {
        "name": (connector.name.lower(), connector.pk),
        "provider": (connector.provider, connector.name.lower()),
        "host": (connector.api_host, connector.name.lower()),
        "model": (connector.effective_default_model.lower(), connector.name.lower()),
        "requests": (row.recent.requests, connector.name.lower()),
        "tokens": (row.recent.total_tokens, connector.name.lower()),
        "error_rate": (row.recent.error_rate if row.recent.error_rate is not None else -1.0, connector.name.lower()),
        "last": (row.last.timestamp.replace(tzinfo=None) if row.last else _EPOCH, connector.name.lower()),
        "created": (connector.created_at.replace(tzinfo=None) if connector.created_at else _EPOCH, connector.name.lower()),
    }[key]


def parse_sort(raw: str | None) -> tuple[str, bool]:
    """``name`` -> ("name", False); ``-requests`` -> ("requests", True); anything else -> the default."""
    raw = (raw or "").strip()
    descending = raw.startswith("-")
    key = raw.removeprefix("-")
    return (key, descending) if key in SORT_COLUMNS else (DEFAULT_SORT, False)


def connector_rows(*, search: str = "", provider: str = "", sort: str = DEFAULT_SORT, descending: bool = False) -> list[ConnectorRow]:
    """Every connector matching ``search`` (name, URL host, model) and ``provider``, sorted; without last executions
    unless sorting by them (``attach_last_executions`` adds them to the rows shown)."""
    connectors = all_connectors()
    names = Counter(connector.name.strip().lower() for connector in connectors)
    if provider in Provider.values:
        connectors = [c for c in connectors if c.provider == provider]
    if search.strip():
        connectors = [c for c in connectors if _matches(c, search)]
    recent = usage_last_24_hours()
    rows = [
        ConnectorRow(c, recent.get(c.pk, RecentUsage()), duplicate_name=names[c.name.strip().lower()] > 1)
        for c in connectors
    ]
    if sort == "last":
        attach_last_executions(rows)
    rows.sort(key=lambda row: _sort_value(row, sort), reverse=descending)
    return rows


def attach_last_executions(rows: list[ConnectorRow]) -> None:
    last = last_executions([row.connector.pk for row in rows if row.last is None])
    for row in rows:
        row.last = row.last or last.get(row.connector.pk)
