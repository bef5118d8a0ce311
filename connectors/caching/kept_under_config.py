"""Answers worked out from the networking settings (``settings.ACTIONS_CONFIG``) and a key, kept while those settings
stay the same object: what a connector's URL makes of them is the same on every call."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

from connectors.caching.bounded_answers import BoundedAnswers


class KeptUnderConfig:
    """A bounded map of answers (``BoundedAnswers``) for one ``ActionsConfig``. A different config object (settings
    replaced, as tests do) starts it afresh."""

    def __init__(self, max_entries: int = 1024):
        self._answers = BoundedAnswers(max_entries)
        self._config: object = None

    def get(self, config: object, key: Hashable, compute: Callable[[], Any]) -> Any:
        if self._config is not config:
            self._answers.clear()
            self._config = config
        return self._answers.get(key, compute)
