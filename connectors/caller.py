"""Who the current request acts as, beyond its user: the API key it authenticated with, if any.

Authentication (connectors/api/auth.py) sets it; the execution record (connectors/outbound/record.py) reads it, so
an execution is counted against the key's budgets and rate limits and its event names the key, without every
layer between them passing it along. A context variable is per asyncio task, so concurrent requests never see
each other's key.
"""

from contextvars import ContextVar
from dataclasses import dataclass

current_api_key_id: ContextVar[int | None] = ContextVar("current_api_key_id", default=None)


@dataclass(frozen=True)
class KeyScope:
    """Where the current request's API key may act: its space, and (when not empty) only these connectors."""

    space_id: str
    connector_ids: frozenset[str] = frozenset()

    def allows_connector(self, connector_id: str) -> bool:
        return not self.connector_ids or connector_id in self.connector_ids


# Set with current_api_key_id; None for any other credential (a password, a session), which acts in every space
# where its user holds a role.
current_key_scope: ContextVar[KeyScope | None] = ContextVar("current_key_scope", default=None)
