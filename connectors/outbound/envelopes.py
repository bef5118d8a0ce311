"""Kibana's execution envelope, built in one place for every path that answers ``_execute`` and the Test panel.

``{"status": "ok"|"error", "connector_id", "data"?, "message"?, "service_message"?, "retry", "errorSource",
"retry_after"?}`` (README, "Running a connector"; docs/KIBANA.md 4.1, 4.2). As Kibana's action executor classifies
them:

- the top-level params are invalid (no ``subAction`` string, ``subActionParams`` not an object): the reason is the
  ``message``, ``retry: false``, ``errorSource: "user"``;
- the connector's configuration fails validation when it runs (its URL's host left ``allowedHosts``): the reason is
  the ``message``, ``retry: false``, ``errorSource: "framework"``;
- anything thrown while running (unknown sub-action, sub-action params, the provider's error of any status, the
  network, TLS, timeouts, sizes, a secret that cannot be decrypted): ``an error occurred while running the action``
  with the reason as ``service_message``, ``retry: true``, ``errorSource: "framework"`` (``"user"`` for the
  sub-action params, which Kibana tags as a user error).

``retry_after`` (seconds, from the provider's ``retry-after``) is kept for this app's own callers; the Kibana API
sends it as a ``Retry-After`` header, not in the body (connectors/api/kibana.py, envelope_response).
"""

from __future__ import annotations

from typing import Any

ACTION_ERROR = "an error occurred while running the action"
USER = "user"
FRAMEWORK = "framework"


def ok_envelope(connector_id: str, data: Any) -> dict[str, Any]:
    return {"status": "ok", "connector_id": connector_id, "data": data}


def error_envelope(connector_id: str, message: str, service_message: str | None = None, *, retry: bool,
                   error_source: str, retry_after: float | None = None) -> dict[str, Any]:
    envelope = {"status": "error", "connector_id": connector_id, "message": message, "retry": retry,
                "errorSource": error_source}
    if service_message:
        envelope["service_message"] = service_message
    if retry_after is not None:
        envelope["retry_after"] = retry_after
    return envelope


def rejection_envelope(connector_id: str, reason: str) -> dict[str, Any]:
    """Invalid top-level params (``error validating action params: ...``): the reason is the message."""
    return error_envelope(connector_id, reason, retry=False, error_source=USER)


def config_error_envelope(connector_id: str, reason: str) -> dict[str, Any]:
    """The connector's config fails validation at execution (``error validating action type config: ...``)."""
    return error_envelope(connector_id, reason, retry=False, error_source=FRAMEWORK)


def failure_envelope(connector_id: str, reason: str, *, error_source: str = FRAMEWORK,
                     retry_after: float | None = None) -> dict[str, Any]:
    """Thrown while running: Kibana's generic message, the reason as service_message, ``retry: true``."""
    return error_envelope(connector_id, ACTION_ERROR, reason, retry=True, error_source=error_source,
                          retry_after=retry_after)


def refusal_envelope(connector_id: str, refusal) -> dict[str, Any]:
    """Refused by a budget or a rate limit (usage.governance.enforcement.admission): the reason, which names the budget or
    limit and when it resets, is the message; ``retry`` is true and ``retry_after`` says when. Kibana has no such
    refusal; ``errorSource`` is ``framework``, as for every refusal that is not about the params (docs/KIBANA.md 4.2)."""
    return error_envelope(connector_id, refusal.message, retry=True, error_source=FRAMEWORK,
                          retry_after=refusal.retry_after)
