"""Kibana's execution envelope, built in one place for every path that answers ``_execute`` and the Test panel.

``{"status": "ok"|"error", "connector_id", "data"?, "message"?, "service_message"?, "retry", "retry_after"?}``
(README, "Running a connector"; docs/KIBANA.md). An execution refused before anything was sent (invalid params)
puts its reason in ``message``; an execution that failed on the way (the provider, the network, a secret that
cannot be decrypted) says ``an error occurred while running the action`` and puts the reason in
``service_message``.
"""

from __future__ import annotations

from typing import Any

ACTION_ERROR = "an error occurred while running the action"


def ok_envelope(connector_id: str, data: Any) -> dict[str, Any]:
    return {"status": "ok", "connector_id": connector_id, "data": data}


def error_envelope(connector_id: str, message: str, service_message: str | None = None, retry: bool = False,
                   retry_after: float | None = None) -> dict[str, Any]:
    envelope = {"status": "error", "connector_id": connector_id, "message": message, "retry": retry}
    if service_message:
        envelope["service_message"] = service_message
    if retry_after is not None:
        envelope["retry_after"] = retry_after
    return envelope


def rejection_envelope(connector_id: str, reason: str) -> dict[str, Any]:
    """Refused before sending (invalid params, unknown sub-action): the reason is the message."""
    return error_envelope(connector_id, reason, retry=False)


def failure_envelope(connector_id: str, reason: str, *, retry: bool = False,
                     retry_after: float | None = None) -> dict[str, Any]:
    """Failed while running: Kibana's generic message, with the reason as service_message."""
    return error_envelope(connector_id, ACTION_ERROR, reason, retry=retry, retry_after=retry_after)


def refusal_envelope(connector_id: str, refusal) -> dict[str, Any]:
    """Refused by a budget or a rate limit (usage.governance.admission): the reason, which names the budget or
    limit and when it resets, is the message; ``retry`` is true and ``retry_after`` says when."""
    return error_envelope(connector_id, refusal.message, retry=True, retry_after=refusal.retry_after)
