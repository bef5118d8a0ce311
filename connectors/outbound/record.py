"""One execution's record: opened when the execution starts, ended exactly once, written through usage.

Every path that runs a connector (``_execute``, streams, the OpenAI-compatible endpoint, the Test panel) opens an
``ExecutionRecord`` first and ends it with one of:

- ``succeeded(usage)``: the provider answered;
- ``rejected(reason)``: refused before anything was sent (a malformed body, invalid params);
- ``failed(reason)``: failed on the way (unreachable, timeout, host not allowed, a secret that cannot be
  decrypted, an answer that is not JSON, a stream cut short, an internal error);
- ``upstream_error(error)``: the provider answered 4xx/5xx (connectors.outbound.upstream_errors);
- ``cancelled()``: the caller went away (``client disconnected``).

The reason given is the one the caller is told, so the event log and the answer never disagree. Ending a record
writes its event through ``usage.recording.writer.record_execution``, the one door of the event log; a write that fails
is logged the same way on every path and never costs the caller its answer. Ending a record twice is a no-op, so
a path that reaches two endings (a stream closed while it records) still writes one event.
"""

from __future__ import annotations

import logging
import time
from typing import TypeVar

from django.utils import timezone

from connectors.caller import current_api_key_id
from connectors.models import Connector
from connectors.outbound import detached_tasks
from connectors.outbound.upstream_errors import UpstreamError
from connectors.spaces.current import current_space_id
from usage.governance.enforcement import admission, settlement
from usage.governance.enforcement.admission import Refusal
from usage.governance.pricing import prices as pricing
from usage.models import ExecutionEvent, Outcome, UsageSource
from usage.observability.execution import execution_opened
from usage.recording.spool import event_as_json
from usage.recording.writer import EventNotRecorded, record_execution, recording_in_background

CLIENT_DISCONNECTED = "client disconnected"

logger = logging.getLogger(__name__)
T = TypeVar("T")

class ExecutionRecord:
    """The event of one execution, filled in as it runs and written once when it ends."""

    __slots__ = ("connector", "event", "observation", "ended", "reservation", "_started")

    def __init__(self, connector: Connector, *, user, source: str, sub_action: str, request_bytes: int = 0):
        self.connector = connector
        self._started = time.perf_counter()
        self.ended = False
        self.reservation = admission.NOTHING_RESERVED
        known_user = getattr(user, "pk", None) is not None
        self.event = ExecutionEvent.opened(
            timestamp=timezone.now(),
            connector_id=str(connector.pk),
            connector_name=connector.name,
            connector_is_preconfigured=connector.is_preconfigured,
            user=user if known_user else None,
            user_name=user.get_username() if known_user else "",
            source=source,
            sub_action=str(sub_action or "")[:32],
            outcome=Outcome.FAILURE,
            request_bytes=request_bytes,
            api_key_id=current_api_key_id.get(),
            # A stored connector's own space; a preconfigured one (in every space) is run in the request's.
            space_id=current_space_id.get() if connector.is_preconfigured else connector.space_id,
        )
        # Metrics and tracing follow the execution from here to record_execution (README, Prometheus).
        self.observation = execution_opened(connector)

    @property
    def duration_ms(self) -> float:
        return self.event.duration_ms

    # --- while it runs ------------------------------------------------------------------------------------
    async def sending(self, requested_model: str, request_bytes: int,
                      completion_cap: int | None = None) -> Refusal | None:
        """The request shaped for the provider: its model, size and completion cap (``max_completion_tokens`` or
        ``max_tokens``, None when it sets neither). Before anything is sent, the budgets and rate limits that count
        this execution admit it (usage.governance.enforcement.admission); when one refuses, the record ends as rejected, with
        zero tokens, and the refusal is returned for the caller's answer."""
        self.event.requested_model = requested_model
        self.event.request_bytes = request_bytes
        event = self.event
        decision = await admission.admit(
            event.connector_id, event.user_id, event.api_key_id, space_id=event.space_id, request_bytes=request_bytes,
            completion_cap=completion_cap, estimate_cost=self._estimated_cost,
        )
        if isinstance(decision, Refusal):
            admission.alert_refusal(decision, connector_id=event.connector_id)
            await self.rejected(decision.message)
            return decision
        self.reservation = decision
        return None

    async def _estimated_cost(self, prompt_tokens: int, completion_tokens: int) -> int | None:
        # Asked only when a money budget counts this execution; the table is in memory unless it is stale.
        table = await pricing.acurrent_table()
        event = self.event
        return table.cost_of(event.connector_id, (event.requested_model,), event.timestamp,
                             pricing.TokenCounts(prompt=prompt_tokens, completion=completion_tokens))

    def answered(self, status: int, response_bytes: int | None = None) -> None:
        """The provider's status line (and body size, when read whole)."""
        self.event.upstream_status = status
        if response_bytes is not None:
            self.event.response_bytes = response_bytes

    def received(self, chunk_bytes: int) -> None:
        """A piece of a streamed body."""
        self.event.response_bytes += chunk_bytes

    # --- the endings --------------------------------------------------------------------------------------
    async def succeeded(self, usage: dict[str, int] | None, *, usage_source: str = UsageSource.PROVIDER,
                        response_model: str = "") -> None:
        await self._end(Outcome.SUCCESS, "", usage, usage_source, response_model)

    async def rejected(self, reason: str) -> None:
        await self._end(Outcome.FAILURE, reason, None, UsageSource.NONE, "")

    async def failed(self, reason: str, *, usage: dict[str, int] | None = None,
                     usage_source: str = UsageSource.PROVIDER, response_model: str = "") -> None:
        await self._end(Outcome.FAILURE, reason, usage, usage_source, response_model)

    async def upstream_error(self, error: UpstreamError) -> None:
        await self._end(Outcome.FAILURE, error.message, None, UsageSource.NONE, "")

    async def cancelled(self, *, usage: dict[str, int] | None = None, usage_source: str = UsageSource.PROVIDER,
                        response_model: str = "") -> None:
        await self._end(Outcome.FAILURE, CLIENT_DISCONNECTED, usage, usage_source, response_model)

    async def _end(self, outcome: str, reason: str, usage: dict[str, int] | None, usage_source: str,
                   response_model: str) -> None:
        if self.ended:
            return
        self.ended = True
        event = self.event
        event.outcome = outcome
        event.error_message = reason or ""
        if response_model:
            event.response_model = response_model[:255]
        if usage:
            event.usage_source = usage_source
            event.prompt_tokens = usage["prompt_tokens"]
            event.completion_tokens = usage["completion_tokens"]
            event.total_tokens = usage["total_tokens"]
            event.cached_tokens = usage.get("cached_tokens")
            event.reasoning_tokens = usage.get("reasoning_tokens")
        else:
            event.usage_source = UsageSource.NONE
        event.duration_ms = (time.perf_counter() - self._started) * 1000
        try:
            event.cost_nanos = await pricing.acost_of_event(event)
        except Exception:  # a price table that cannot be read costs the event its cost, not the event
            logger.exception("pricing the event of an execution of connector %s failed", event.connector_id)
        try:
            await record_execution(event, self.observation)
        except EventNotRecorded:
            pass  # the writer logged the event whole; the caller keeps its answer
        except Exception:  # written directly (no writer in this process) and refused: the caller keeps its answer
            logger.exception("recording the event of an execution of connector %s failed; the event: %s",
                             event.connector_id, event_as_json(event))
        if not self.reservation.empty:
            if recording_in_background():
                # Under a server the caller does not wait for its budgets' counters: they are settled after it
                # has its answer, in one batch with the other executions that end meanwhile (README, "Budgets
                # and rate limits"). The batch is held like a detached execution, so shutdown waits for it.
                settling = settlement.settle_soon(self.reservation, total_tokens=event.total_tokens or 0,
                                                  cost=event.cost_nanos, connector_id=event.connector_id)
                detached_tasks.settle_detached(settling)
            else:
                used = await admission.settle(self.reservation, total_tokens=event.total_tokens or 0,
                                              cost=event.cost_nanos)
                admission.alert_on_thresholds(self.reservation, used, connector_id=event.connector_id)


async def refuse_before_start(connector, message: str, *, user, source: str, sub_action: str = "",
                              request_bytes: int = 0) -> None:
    """An execution attempt refused before anything was sent (a malformed body, a disabled connector type): still
    recorded once, with the reason the caller is told, and zero tokens."""
    record = ExecutionRecord(connector, user=user, source=source, sub_action=sub_action, request_bytes=request_bytes)
    await record.rejected(message)
