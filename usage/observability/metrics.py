"""Prometheus metrics, in prometheus-client's multi-process mode when the server runs several workers.

The mode is chosen from ``PROMETHEUS_MULTIPROC_DIR``, which connectors_admin/settings.py exports before this module
is imported: each worker then writes its values to memory-mapped files in that directory, and ``GET /metrics``
adds them up, so a scrape counts every worker whichever one answers it. Without it (one process: ``make run``,
tests) the values live in this process's memory.

Label cardinality is bounded (README, Prometheus): connector ids (created by admins), space ids (created by
superusers: a connector of a space has one value; a preconfigured connector, in every space, one per space it is
called in), the provider, sub-actions from a fixed list, outcomes, token kinds, HTTP status codes, and model names, of which each process keeps at most
``METRICS_MODELS_PER_CONNECTOR`` per connector (the first seen); later ones are counted as ``other``. Never a user,
a key or free text.

The hot path binds label values once: the children of every metric for one (connector, provider, model,
sub-action, outcome, space) are looked up in a dict after the first execution with those values.
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

from django.conf import settings
from prometheus_client import REGISTRY as PROCESS_REGISTRY
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

from usage.formatting import currency
from usage.models.events import UNSTORABLE_CHARACTERS

KNOWN_SUB_ACTIONS = frozenset(("run", "test", "invokeAI", "stream", "invokeStream"))
TOKEN_KINDS = ("prompt", "completion", "cached", "reasoning")
OTHER = "other"
NONE = "none"

# Upstream calls take from milliseconds (a local server) to minutes (long streams); the gateway's own share is a
# few milliseconds (docs/PERFORMANCE.md), so its buckets are finer.
UPSTREAM_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
ADDED_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 1)

# Every per-connector series also carries the connector's space: one value per space (spaces are created by
# superusers), so bounded like the connector label, and a space's dashboards can sum its connectors with
# ``sum by (space)`` whichever metric they read.
EXECUTIONS = Counter(
    "connectors_executions", "Executions of connectors, by connector, provider, model, sub-action, outcome and space.",
    ["connector", "provider", "model", "sub_action", "outcome", "space"],
)
TOKENS = Counter(
    "connectors_tokens", "Tokens of executions by kind (prompt, completion, cached, reasoning); cached tokens are "
    "part of the prompt tokens and reasoning tokens part of the completion tokens, as OpenAI reports them.",
    ["connector", "model", "kind", "space"],
)
COST = Counter(
    "connectors_cost", "What executions cost, in units of USAGE_CURRENCY (the currency label), at the prices of "
    "usage/governance/pricing/prices.py; executions without a known price add nothing.",
    ["connector", "model", "currency", "space"],
)
UPSTREAM_LATENCY = Histogram(
    "connectors_upstream_latency_seconds", "Time spent in the call to the provider (for streams: until the stream "
    "ended), per execution that reached the network.",
    ["connector", "model", "space"], buckets=UPSTREAM_BUCKETS,
)
ADDED_LATENCY = Histogram(
    "connectors_added_latency_seconds", "What the gateway added to an execution that called the provider: from the "
    "request's arrival to its event being handed to the event writer, less the upstream time.",
    ["connector", "space"], buckets=ADDED_BUCKETS,
)
UPSTREAM_RESPONSES = Counter(
    "connectors_upstream_responses", "Executions that called the provider, by the HTTP status of its answer "
    "(none: no answer: refused, timed out, TLS failure, ...).",
    ["connector", "status", "space"],
)
EVENT_QUEUE_DEPTH = Gauge(
    "connectors_event_writer_queue_depth", "Execution events queued for the event writer and not yet written "
    "(summed over live worker processes).",
    multiprocess_mode="livesum",
)
EVENT_WRITE_FAILURES = Counter(
    "connectors_event_write_failures", "Failed event writes: database_unavailable (a batch attempt; the batch is "
    "retried or spooled), spool_unavailable (the local spool could not take a batch), rejected (an event the "
    "database refused, logged whole), lost (an event not stored for another reason, logged whole), "
    "conflict_retried (a batch rolled back by a deadlock with another process's batch, written again at once).",
    ["reason"],
)
CACHE_REQUESTS = Counter(
    "connectors_cache_requests", "Lookups in the per-process caches (connector: connectors for executions; "
    "credential: verified HTTP Basic credentials and API keys), by result (hit or miss).",
    ["cache", "result"],
)
REFUSALS = Counter(
    "connectors_refusals", "Executions refused by a token or cost budget or a rate limit, by reason (budget, "
    "rate_limit), counted where usage/governance/enforcement/admission.py refuses them.",
    ["connector", "reason", "space"],
)

_models_seen: dict[str, set[str]] = {}
_models_lock = threading.Lock()


def model_label(connector_id: str, model: str) -> str:
    """``model`` if it is among the first METRICS_MODELS_PER_CONNECTOR seen for the connector, else ``other``.

    A lone surrogate or NUL (a provider may report any model name) becomes U+FFFD, as in the event log: a label
    that cannot be encoded as UTF-8 would stay in the registry for the process's life and make every later scrape
    fail.
    """
    if not model:
        return NONE
    if not model.isascii() or "\x00" in model:
        model = UNSTORABLE_CHARACTERS.sub("\ufffd", model)
    seen = _models_seen.get(connector_id)
    if seen is not None:
        if model in seen:
            return model
        if len(seen) >= settings.METRICS_MODELS_PER_CONNECTOR:
            return OTHER
    with _models_lock:
        seen = _models_seen.setdefault(connector_id, set())
        if model in seen or len(seen) < settings.METRICS_MODELS_PER_CONNECTOR:
            seen.add(model)
            return model
    return OTHER


def sub_action_label(sub_action: str) -> str:
    return sub_action if sub_action in KNOWN_SUB_ACTIONS else OTHER


class ExecutionChildren:
    """The metric children of one label combination, bound once."""

    __slots__ = ("executions", "tokens", "cost", "upstream_latency", "added_latency")

    def __init__(self, connector: str, provider: str, model: str, sub_action: str, outcome: str, space: str):
        self.executions = EXECUTIONS.labels(connector, provider, model, sub_action, outcome, space)
        self.tokens = tuple(TOKENS.labels(connector, model, kind, space) for kind in TOKEN_KINDS)
        self.cost = COST.labels(connector, model, currency(), space)
        self.upstream_latency = UPSTREAM_LATENCY.labels(connector, model, space)
        self.added_latency = ADDED_LATENCY.labels(connector, space)


_children: dict[tuple, ExecutionChildren] = {}
_status_children: dict[tuple, Counter] = {}


def observe_execution(event, provider: str, upstream_seconds: float | None, total_seconds: float) -> None:
    """Count one recorded execution (its ExecutionEvent, the connector's provider, the time spent upstream)."""
    connector = event.connector_id
    # Keyed by the label values (not the raw model or sub-action a caller sent), so that this map stays as bounded
    # as the labels are.
    key = (connector, provider, model_label(connector, event.response_model or event.requested_model),
           sub_action_label(event.sub_action), event.outcome, event.space_id)
    children = _children.get(key)
    if children is None:
        children = _children[key] = ExecutionChildren(*key)
    children.executions.inc()
    prompt, completion, cached, reasoning = children.tokens
    if event.prompt_tokens:
        prompt.inc(event.prompt_tokens)
    if event.completion_tokens:
        completion.inc(event.completion_tokens)
    if event.cached_tokens:
        cached.inc(event.cached_tokens)
    if event.reasoning_tokens:
        reasoning.inc(event.reasoning_tokens)
    if event.cost_nanos:
        children.cost.inc(event.cost_nanos / 1_000_000_000)
    if upstream_seconds is None:
        return  # refused before the network: no upstream time, no status, nothing added to a call
    children.upstream_latency.observe(upstream_seconds)
    children.added_latency.observe(max(0.0, total_seconds - upstream_seconds))
    status_key = (connector, event.upstream_status, event.space_id)
    status = _status_children.get(status_key)
    if status is None:
        code = event.upstream_status
        status = _status_children[status_key] = UPSTREAM_RESPONSES.labels(
            connector, str(code) if code and 100 <= code <= 599 else NONE, event.space_id
        )
    status.inc()


_cache_children: dict[tuple[str, bool], Counter] = {}


def count_cache_lookup(cache: str, hit: bool) -> None:
    if not settings.METRICS_ENABLED:
        return
    child = _cache_children.get((cache, hit))
    if child is None:
        child = _cache_children[(cache, hit)] = CACHE_REQUESTS.labels(cache, "hit" if hit else "miss")
    child.inc()


_refusal_children: dict[tuple[str, str, str], Counter] = {}


def count_refusal(connector_id: str, space_id: str, reason: str) -> None:
    """An execution refused by a budget or a rate limit (``reason``: budget or rate_limit) in ``space_id``."""
    if not settings.METRICS_ENABLED:
        return
    key = (connector_id, space_id, reason if reason in ("budget", "rate_limit") else OTHER)
    child = _refusal_children.get(key)
    if child is None:
        child = _refusal_children[key] = REFUSALS.labels(key[0], key[2], key[1])
    child.inc()


def set_event_queue_depth(depth: int) -> None:
    if settings.METRICS_ENABLED:
        EVENT_QUEUE_DEPTH.set(depth)


def count_event_write_failure(reason: str, events: int = 1) -> None:
    EVENT_WRITE_FAILURES.labels(reason).inc(events)


# --- exposition and the multi-process directory ----------------------------------------------------------------------

def multiprocess_directory() -> str:
    return settings.PROMETHEUS_MULTIPROC_DIR


def exposition() -> bytes:
    """The Prometheus text format of every metric: summed over the workers' files in multi-process mode."""
    if multiprocess_directory():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(PROCESS_REGISTRY)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


AUTOMATIC_DIRECTORY_PREFIX = "connectors-admin-metrics-"  # + the supervisor's pid (connectors_admin/settings.py)


def forget_dead_workers() -> None:
    """Drop the live-gauge files of worker processes that are gone (a crashed or replaced worker), so the queue
    depth sums live workers only; counters and histograms of dead workers stay: their counts happened. Also
    remove the directories that earlier servers' supervisors were given automatically, once they are gone."""
    directory = multiprocess_directory()
    if not directory:
        return
    for earlier in Path(directory).parent.glob(AUTOMATIC_DIRECTORY_PREFIX + "*"):
        pid = earlier.name.removeprefix(AUTOMATIC_DIRECTORY_PREFIX)
        if earlier != Path(directory) and pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(earlier, ignore_errors=True)
    for path in Path(directory).glob("gauge_live*_*.db"):
        pid = path.stem.rsplit("_", 1)[-1]
        if pid.isdigit() and not _pid_alive(int(pid)):
            multiprocess.mark_process_dead(int(pid), directory)


def worker_stopping() -> None:
    """At a worker's shutdown: its live gauges no longer count."""
    if multiprocess_directory():
        multiprocess.mark_process_dead(os.getpid(), multiprocess_directory())
