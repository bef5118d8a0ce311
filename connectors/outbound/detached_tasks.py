"""Work that runs on after its caller left: non-streamed executions whose caller hung up, event writes, and the
settlements of budget counters after the caller was answered. Held here so that they are not garbage-collected and
so that the server's shutdown can wait for them (connectors_admin/asgi.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")

_detached: set[asyncio.Future] = set()
# Of those, the settlements of budget counters that run after their caller was answered.
_settling: set[asyncio.Future] = set()


def keep_until_done(awaitable: Awaitable[T]) -> asyncio.Future:
    """``awaitable`` as a task that runs to its end whatever happens to the request that started it."""
    task = asyncio.ensure_future(awaitable)
    _detached.add(task)
    task.add_done_callback(_detached.discard)
    return task


async def complete_despite_hangup(awaitable: Awaitable[T]) -> T:
    """Run a non-streamed execution to its end even if its caller hangs up.

    A client that disconnects makes the server cancel the request's task; the provider has the request by then
    (and bills it), so the execution goes on in a task of its own, finishes the upstream call and records its
    event. The caller's task alone is cancelled. Streams handle a hang-up themselves (``client disconnected``).
    """
    return await asyncio.shield(keep_until_done(awaitable))


async def wait_for_detached(timeout: float) -> bool:
    """Wait (at shutdown) for executions whose callers left. True if none is left running."""
    pending = set(_detached)
    if not pending:
        return True
    _done, still_running = await asyncio.wait(pending, timeout=timeout)
    return not still_running


def settle_detached(settling: asyncio.Future) -> None:
    """Hold a settlement (shared by the executions of one batch) until it is done; each one once."""
    if settling not in _settling:
        keep_until_done(settling)
        _settling.add(settling)
        settling.add_done_callback(_settling.discard)


def settlements_running() -> int:
    return len(_settling)
