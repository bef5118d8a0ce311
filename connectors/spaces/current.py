"""The space the current request acts in.

The URL prefix (connectors/spaces/middleware.py, and the API's short path in connectors_admin/asgi.py) sets it;
the access policy, the connector lookup and the event record read it, so that no layer between them passes the
space along. A context variable is per asyncio task (and copied into the threads sync code runs in), so
concurrent requests never see each other's space. Outside a request (commands, start-up) it is ``default``.
"""

from contextvars import ContextVar

DEFAULT_SPACE_ID = "default"

current_space_id: ContextVar[str] = ContextVar("current_space_id", default=DEFAULT_SPACE_ID)


def space_id() -> str:
    return current_space_id.get()
