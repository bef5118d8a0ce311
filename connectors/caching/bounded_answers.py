"""A bounded map of answers worked out once per key, for questions whose answer never changes while the map lives."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any


class BoundedAnswers:
    """``get(key, compute, *args)`` is ``compute(*args)``, worked out once per key. Past ``max_entries`` the map starts
    afresh, which bounds memory without bookkeeping on the hot path. The owner decides when its answers go stale:
    it drops the map (``clear``) or the map with it."""

    def __init__(self, max_entries: int):
        self.max_entries = max_entries
        self._answers: dict[Hashable, Any] = {}

    def get(self, key: Hashable, compute: Callable[..., Any], *args) -> Any:
        try:
            return self._answers[key]
        except KeyError:
            pass
        answer = compute(*args)
        if len(self._answers) >= self.max_entries:
            self._answers.clear()
        self._answers[key] = answer
        return answer

    def clear(self) -> None:
        self._answers.clear()
