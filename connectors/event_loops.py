"""One value per running event loop: connections and batchers belong to the loop that made them (uvicorn runs one
loop per worker; test clients and ``async_to_sync`` may run each request in a new one)."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class PerEventLoop(Generic[T]):
    """``get()`` gives the running loop's value, made by ``make`` on first use; it goes with its loop."""

    def __init__(self, make: Callable[[], T]):
        self._make = make
        self._values: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def get(self) -> T:
        loop = asyncio.get_running_loop()
        value = self._values.get(loop)
        if value is None:
            value = self._values[loop] = self._make()
        return value
