"""Answers worked out from the networking settings (``settings.ACTIONS_CONFIG``) and a key, kept while those settings
stay the same object: what a connector's URL makes of them is the same on every call."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any


class KeptUnderConfig:
    """A bounded map of answers for one ``ActionsConfig``. A different config object (settings replaced, as tests
    do) starts it afresh; past ``max_entries`` it starts afresh too, which bounds memory without bookkeeping."""

    def __init__(self, max_entries: int = 1024):
        self.max_entries = max_entries
        self._answers: dict[Hashable, Any] = {}
        self._config: object = None

    def get(self, config: object, key: Hashable, compute: Callable[[], Any]) -> Any:
        if self._config is not config:
            self._answers.clear()
            self._config = config
        try:
            return self._answers[key]
        except KeyError:
            pass
        answer = compute()
        if len(self._answers) >= self.max_entries:
            self._answers.clear()
        self._answers[key] = answer
        return answer
