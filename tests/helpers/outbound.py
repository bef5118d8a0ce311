"""Helpers for the outbound-path tests: run one execution from a sync test and check what it recorded."""

from __future__ import annotations

import json
import socket

from asgiref.sync import async_to_sync
from django.forms.models import model_to_dict

from connectors.outbound.execution import Execution, execute
from tests.helpers.execute import HELLO, run_body
from usage.models import EventSource, ExecutionEvent

SECRET = "sk-outbound-SECRET-0123456789abcdef"


def run(connector, body: dict | None = None, *, sub_action: str = "run", user=None, **sub_params) -> Execution:
    """Execute ``run`` (or ``sub_action``) with ``body`` as Kibana's JSON string, as the _execute API does."""
    params = run_body(HELLO if body is None else body, sub_action, **sub_params)["params"]
    return async_to_sync(execute)(connector, params, user=user, source=EventSource.API)


def assert_recorded_once(execution: Execution, caplog, *, outcome: str, secret: str = SECRET) -> ExecutionEvent:
    """Exactly one event, with the outcome (and an error message on failure), and the secret nowhere."""
    events = list(ExecutionEvent.objects.all())
    assert len(events) == 1, f"expected one event, got {len(events)}"
    event = events[0]
    assert event.outcome == outcome
    if outcome == "failure":
        assert event.error_message, "a failed execution records why"
        assert execution.envelope["status"] == "error"
        assert event.error_message in (execution.envelope.get("service_message"), execution.envelope.get("message"))
    else:
        assert execution.envelope["status"] == "ok" and not event.error_message
    assert secret not in json.dumps(execution.envelope)
    assert secret not in json.dumps(model_to_dict(event), default=str)
    assert secret not in caplog.text
    return event


def closed_port() -> int:
    """A loopback port nothing listens on (bound and released, so nobody else got it in between)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
