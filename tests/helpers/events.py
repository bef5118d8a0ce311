"""Execution events for tests: built with plausible defaults, and recorded through the single write path
(ExecutionEvent.objects.insert_batch, which keeps the rollups)."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from usage.models import ExecutionEvent

CONNECTOR = "usage-test-connector"
USERS = ("alice", "bob", "carol", "")
MODELS = ("gpt-4o", "gpt-4o-mini", "o3-mini")


def build_event(timestamp: datetime, *, connector_id: str = CONNECTOR, **fields) -> ExecutionEvent:
    """One event, not stored; ``fields`` replace the defaults."""
    values = {
        "connector_id": connector_id,
        "connector_name": "Usage test",
        "user_name": "alice",
        "source": "api",
        "sub_action": "run",
        "outcome": "success",
        "duration_ms": 120.0,
        "requested_model": "gpt-4o",
        "prompt_tokens": 10,
        "completion_tokens": 5,
    }
    return ExecutionEvent(timestamp=timestamp, **{**values, **fields})


def record(timestamp: datetime, *, connector_id: str = CONNECTOR, **fields) -> ExecutionEvent:
    """One event through the single write path, with plausible defaults."""
    return ExecutionEvent.objects.insert_batch([build_event(timestamp, connector_id=connector_id, **fields)])[0]


def record_mix(start: datetime, hours: int, *, seed: int = 4, per_hour: int = 3,
               connector_id: str = CONNECTOR, **fields) -> list[ExecutionEvent]:
    """Events of several users, models and outcomes, including the first and last instant of hours; ``fields``
    (a space_id, an api_key) are given to every one."""
    rng = random.Random(seed)
    events = []
    for hour in range(hours):
        base = start + timedelta(hours=hour)
        offsets = [timedelta(0), timedelta(minutes=59, seconds=59, microseconds=999_999)]
        offsets += [timedelta(seconds=rng.randrange(3600)) for _ in range(per_hour - 2)]
        for offset in offsets:
            failed = rng.random() < 0.25
            events.append(
                record(
                    base + offset,
                    connector_id=connector_id,
                    user_name=rng.choice(USERS),
                    requested_model=rng.choice(MODELS),
                    response_model=rng.choice(("", "gpt-4o-2024-08-06")) if not failed else "",
                    outcome="failure" if failed else "success",
                    prompt_tokens=0 if failed else rng.randrange(1, 5000),
                    completion_tokens=0 if failed else rng.randrange(1, 2000),
                    cached_tokens=rng.choice((None, 0, rng.randrange(100))),
                    reasoning_tokens=rng.choice((None, rng.randrange(300))),
                    usage_source=rng.choice(("provider", "estimated", "none")),
                    duration_ms=rng.choice((3.0, 10.0, 10.5, 99.9, 480.0, 2500.0, 45000.0)),
                    **fields,
                )
            )
    return events
