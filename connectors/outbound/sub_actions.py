"""The ``.gen-ai`` sub-actions' params, validated as Kibana's action executor and sub-action framework do
(docs/KIBANA.md 4.2, 4.3, 4.5).

Two layers, two kinds of error:

- the top-level params schema of a sub-action connector (``{subAction: string, subActionParams?: object}``):
  ``ParamsError`` with ``error validating action params: [subAction]: expected value of type [string] but got
  [undefined]`` -- answered with ``retry: false``, ``errorSource: "user"``;
- the sub-action itself: an unknown name (``Sub action "x" is not registered. ...``, a framework error) or params that
  fail its strict schema (``Request validation failed (Error: [body]: ...)``, a user error): ``SubActionError``,
  thrown while running in Kibana, so answered with ``an error occurred while running the action``, ``retry: true``.
"""

from __future__ import annotations

from typing import Any

from connectors import untrusted_json
from connectors.models import CONNECTOR_TYPE_ID, CONNECTOR_TYPE_NAME, Connector
from connectors.outbound.envelopes import FRAMEWORK, USER
from connectors.validation import schema_type_of

# Kibana's DEFAULT_TIMEOUT_MS for the sub-actions that read a whole answer (run, test, invokeAI); streams have none
# (docs/KIBANA.md 4.9). transport.effective_timeout still takes the larger of this and responseTimeout.
DEFAULT_TIMEOUT_MS = 200_000
BUFFERED_SUB_ACTIONS = ("run", "test", "invokeAI")

# Keys every sub-action's schema allows without forwarding them (Kibana: signal, timeout, telemetryMetadata).
NOT_FORWARDED = ("signal", "timeout", "telemetryMetadata")
RUN_KEYS = ("body", *NOT_FORWARDED)
STREAM_KEYS = (*RUN_KEYS, "stream")
# InvokeAIActionParamsSchema: everything but NOT_FORWARDED is sent upstream as the chat body.
INVOKE_KEYS = ("messages", "model", "tools", "tool_choice", "functions", "function_call", "n", "stop", "temperature",
               "response_format", *NOT_FORWARDED)
# Kibana's SUB_ACTION.DASHBOARD: answered by the connector API without calling the provider (connectors/api/kibana.py).
DASHBOARD = "getDashboard"
SUB_ACTION_KEYS = {"run": RUN_KEYS, "test": RUN_KEYS, "stream": STREAM_KEYS, "invokeAI": INVOKE_KEYS,
                   "invokeStream": INVOKE_KEYS, DASHBOARD: ("dashboardId",)}


class ParamsError(ValueError):
    """Invalid top-level ``params``; the message is Kibana's ``error validating action params: ...``."""


class SubActionError(Exception):
    """An unknown sub-action or invalid sub-action params: thrown while running, in Kibana's words."""

    def __init__(self, message: str, error_source: str):
        super().__init__(message)
        self.error_source = error_source


def _invalid(key: str, reason: str) -> SubActionError:
    return SubActionError(f"Request validation failed (Error: [{key}]: {reason})", USER)


def _expected(key: str, kind: str, value: Any, present: bool = True) -> SubActionError:
    return _invalid(key, f"expected value of type [{kind}] but got [{schema_type_of(value) if present else 'undefined'}]")


def wants_stream(params: Any) -> bool:
    """Whether ``_execute`` params ask for a streamed answer: ``invokeStream``, or ``stream`` with ``stream: true``."""
    if not isinstance(params, dict):
        return False
    sub_action = params.get("subAction")
    sub_params = params.get("subActionParams")
    return sub_action == "invokeStream" or (
        sub_action == "stream" and isinstance(sub_params, dict) and sub_params.get("stream") is True
    )


def parse_params(connector: Connector, params: Any) -> tuple[str, dict, dict]:
    """(sub-action, subActionParams, chat body) from ``_execute`` params; ParamsError or SubActionError."""
    if not isinstance(params, dict):
        raise ParamsError(f"error validating action params: expected value of type [object] but got "
                          f"[{schema_type_of(params) if params is not None else 'undefined'}]")
    sub_action = params.get("subAction")
    if not isinstance(sub_action, str):
        raise ParamsError("error validating action params: [subAction]: expected value of type [string] but got "
                          f"[{schema_type_of(sub_action) if 'subAction' in params else 'undefined'}]")
    sub_params = params.get("subActionParams")
    if sub_params is None:
        sub_params = {}
    if not isinstance(sub_params, dict):
        raise ParamsError("error validating action params: [subActionParams]: expected value of type [object] but "
                          f"got [{schema_type_of(sub_params)}]")
    allowed = SUB_ACTION_KEYS.get(sub_action)
    if allowed is None:
        raise SubActionError(
            f'Sub action "{sub_action}" is not registered. Connector id: {connector.pk}. '
            f"Connector name: {CONNECTOR_TYPE_NAME}. Connector type: {CONNECTOR_TYPE_ID}",
            FRAMEWORK,
        )
    unknown = sorted(set(sub_params) - set(allowed))
    if unknown:
        raise _invalid(unknown[0], "definition for this key is missing")
    if sub_action == DASHBOARD:
        # DashboardActionParamsSchema: {dashboardId: string}; nothing is sent anywhere.
        if not isinstance(sub_params.get("dashboardId"), str):
            raise _expected("dashboardId", "string", sub_params.get("dashboardId"), "dashboardId" in sub_params)
        return sub_action, sub_params, {}
    if sub_action in ("invokeAI", "invokeStream"):
        body = invoke_body(sub_params)
    else:
        body = parse_body_param(sub_params)
        if "stream" in sub_params and not isinstance(sub_params["stream"], bool):
            raise _expected("stream", "boolean", sub_params["stream"])
    call_timeout_ms(sub_params)
    problem = model_error(body.get("model"))
    if problem:
        raise _invalid("model", problem)
    return sub_action, sub_params, body


def model_error(model: Any) -> str | None:
    """Why a body's ``model`` cannot be used (it is sent on and stored with the event), or None."""
    if model is None:
        return None
    if not isinstance(model, str):
        return f"expected value of type [string] but got [{schema_type_of(model)}]"
    if len(model) > 255 or any(ord(char) < 32 or ord(char) == 127 for char in model):
        return "a model name is at most 255 characters, without control characters (such as NUL)"
    return None


def parse_body_param(sub_params: dict) -> dict:
    """The ``body`` JSON string of run/test/stream, parsed.

    Kibana forwards a body that is not JSON unchanged and lets the provider refuse it; here it is refused before
    anything is sent, in the same words as Kibana's other sub-action validation errors (docs/KIBANA.md 4.2).
    """
    body = sub_params.get("body")
    if not isinstance(body, str):
        raise _expected("body", "string", body, "body" in sub_params)
    try:
        parsed = untrusted_json.loads(body)  # bounded: see connectors/untrusted_json.py
    except ValueError as exc:
        raise _invalid("body", f"body is not valid JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise _invalid("body", "body must be a JSON object")
    return parsed


def invoke_body(sub_params: dict) -> dict:
    """The chat body of invokeAI/invokeStream: every param Kibana forwards (all but signal, timeout,
    telemetryMetadata)."""
    messages = sub_params.get("messages")
    if not isinstance(messages, list):
        raise _expected("messages", "Array", messages, "messages" in sub_params)
    if not messages:
        raise _invalid("messages", "expected a non-empty array")
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise _expected(f"messages.{index}", "object", message)
        if not isinstance(message.get("role"), str):
            raise _expected(f"messages.{index}.role", "string", message.get("role"), "role" in message)
    for key, kind in (("model", str), ("n", int), ("temperature", (int, float))):
        value = sub_params.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, kind)):
            raise _expected(key, "string" if kind is str else "number", value)
    return {key: value for key, value in sub_params.items() if key not in NOT_FORWARDED and value is not None}


def call_timeout_ms(sub_params: dict) -> float | None:
    """The ``timeout`` param (ms), a number or a string holding one (Kibana coerces it); None when absent."""
    timeout = sub_params.get("timeout")
    if timeout is None:
        return None
    number = None
    if isinstance(timeout, (int, float)) and not isinstance(timeout, bool):
        number = float(timeout)
    elif isinstance(timeout, str):
        try:
            number = float(timeout.strip())
        except ValueError:
            number = None
    if number is None or number != number:
        raise _expected("timeout", "number", timeout)
    if number <= 0:
        raise _invalid("timeout", "expected a positive number of milliseconds")
    return number


def call_timeout_for(connector: Connector, sub_action: str, sub_params: dict) -> float | None:
    """The call's timeout (ms): the sub-action's ``timeout`` param, else the connector's own timeout, else Kibana's
    200 s default for a non-streamed call; None (responseTimeout alone) for a stream without either."""
    timeout = call_timeout_ms(sub_params)
    if timeout is None and connector.timeout_ms:
        timeout = float(connector.timeout_ms)
    if timeout is None and sub_action in BUFFERED_SUB_ACTIONS:
        timeout = float(DEFAULT_TIMEOUT_MS)
    return timeout
