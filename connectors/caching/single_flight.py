"""One computation per key at a time, shared by everyone who asks for it meanwhile.

What the process caches miss all at once: a new server process, or an entry that has just expired, meets a burst
of calls that all need the same credential verified or the same connector read. Each of them would run the
password hash, or a query on asgiref's one sync thread, in turn; hundreds in a row add seconds to the burst
(docs/PERFORMANCE.md, "The first burst"). With ``SingleFlight.run``, the first caller computes, the others wait for
its answer. Callers may be in different event loops (the test clients run each request in a loop of its own), so
the waiting is done on a thread-safe future.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Hashable
from concurrent.futures import Future
from typing import Any

_FAILED = object()  # what the waiting callers are told when the computing one raised or was cancelled


class SingleFlight:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[Hashable, Future] = {}

    async def run(self, key: Hashable, compute: Callable[[], Awaitable[Any]]) -> Any:
        """``await compute()``, or the result of the one already running for ``key``. When that one fails (an
        exception, a cancelled caller), each waiting caller computes on its own, and gets its own answer."""
        with self._lock:
            running = self._running.get(key)
            first = running is None
            if first:
                running = self._running[key] = Future()
        if not first:
            result = await asyncio.shield(asyncio.wrap_future(running))
            return await compute() if result is _FAILED else result
        try:
            result = await compute()
        except BaseException:
            running.set_result(_FAILED)
            raise
        else:
            running.set_result(result)
            return result
        finally:
            with self._lock:
                self._running.pop(key, None)
