"""Who the current request acts as, beyond its user: the API key it authenticated with, if any.

Authentication (connectors/api/auth.py) sets it; the execution record (connectors/outbound/record.py) reads it, so
an execution is counted against the key's budgets and rate limits and its event names the key, without every
layer between them passing it along. A context variable is per asyncio task, so concurrent requests never see
each other's key.
"""

from contextvars import ContextVar

current_api_key_id: ContextVar[int | None] = ContextVar("current_api_key_id", default=None)
