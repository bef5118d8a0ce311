"""Added latency of the gateway: sequential keep-alive requests, gateway vs direct to the same upstream, interleaved.

Each round sends one request to every target in turn (each target on its own kept-alive connection), so slow
phases of the machine hit all targets alike. "Added" is the gateway's percentile minus the direct percentile.

Targets: ``direct`` (the upstream itself), ``execute-basic`` and ``execute-apikey`` (``_execute`` run with
HTTP Basic / an API key), ``openai`` (``POST /api/openai/<id>/v1/chat/completions`` with a Bearer key, when the
endpoint exists), and ``litellm`` (LiteLLM's proxy against the same upstream, with ``--litellm PATH``), measured
in a second pass interleaved with direct requests of its own (see ``main``).

Example: ``python -m bench.latency --rounds 2000``  (about 1 minute).

``--space team-a`` runs with spaces in use (bench/harness.py): the connector and the API key in a second space
``team-a``, the Basic user's role granted there only, a connector in the default space beside it, and every gateway
target under ``/s/team-a/``; the events are counted in that space, and printed by space.

``--observability on`` runs the app with Prometheus metrics and OpenTelemetry tracing on, its spans exported over
OTLP/HTTP to a local receiver (tests/servers/otlp_receiver.py) and /metrics scraped at the end; ``--observability off``
with both off (METRICS_ENABLED=false, no OTLP endpoint). Without the option the app's defaults apply (metrics on,
tracing off). docs/PERFORMANCE.md compares ``off`` and ``on`` side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

from bench import harness
from bench.loadgen import Connection, install_uvloop, percentile, print_table

LITELLM_MASTER_KEY = "sk-litellm-bench-master-key-0123456789abcdef"
METRICS_TOKEN = "bench-metrics-token-0123456789"


def start_otlp_receiver() -> tuple[subprocess.Popen, int]:
    port = harness.free_port()
    process = subprocess.Popen([harness.PYTHON, "-m", "tests.servers.otlp_receiver", "--port", str(port)], cwd=harness.ROOT,
                               env={**os.environ, "PYTHONPATH": str(harness.ROOT)})
    harness.wait_for_port(port, process)
    return process, port


def observability_environment(mode: str | None, receiver_port: int | None) -> dict:
    if mode == "off":
        return {"METRICS_ENABLED": "false"}
    if mode == "on":
        return {"METRICS_ENABLED": "true", "METRICS_BEARER_TOKEN": METRICS_TOKEN,
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver_port}",
                "OTEL_SERVICE_NAME": "connectors-admin-bench"}
    return {}


def scraped_executions(port: int) -> float:
    """connectors_executions_total summed over a scrape of /metrics (both workers, multi-process mode)."""
    from prometheus_client.parser import text_string_to_metric_families

    response = asyncio.run(_get(port, "/metrics", {"Authorization": f"Bearer {METRICS_TOKEN}"}))
    return sum(sample.value for family in text_string_to_metric_families(response.body.decode())
               for sample in family.samples if sample.name == "connectors_executions_total")


def start_litellm(litellm_bin: str, upstream_port: int) -> tuple[subprocess.Popen, int, Path]:
    workdir = Path(tempfile.mkdtemp(prefix="litellm-bench-"))
    config = workdir / "config.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: gpt-4o\n"
        "    litellm_params:\n"
        "      model: openai/gpt-4o\n"
        f"      api_base: http://127.0.0.1:{upstream_port}/ok/v1\n"
        "      api_key: sk-bench-upstream-key\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
        "general_settings:\n"
        f"  master_key: {LITELLM_MASTER_KEY}\n"
    )
    port = harness.free_port()
    env = {
        **os.environ,
        # Offline: the model cost map ships in the package; no telemetry; no database.
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_TELEMETRY": "False",
        "NO_DOCS": "True",
    }
    env.pop("DATABASE_URL", None)
    with open(workdir / "litellm.log", "wb") as log:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(
            [litellm_bin, "--config", str(config), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"],
            cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    harness.wait_for_port(port, process, timeout=120)
    return process, port, workdir


async def measure(targets: dict[str, tuple[int, str, bytes, dict]], rounds: int, warmup: int) -> dict[str, list[float]]:
    connections = {name: await Connection("127.0.0.1", port).open() for name, (port, *_rest) in targets.items()}
    samples: dict[str, list[float]] = {name: [] for name in targets}
    for round_index in range(warmup + rounds):
        for name, (_port, path, body, headers) in targets.items():
            response = await connections[name].request("POST", path, body, headers)
            if response.status != 200 or b'"status":"error"' in response.body.replace(b" ", b""):
                raise SystemExit(f"{name}: HTTP {response.status}: {response.body[:300]!r}")
            if round_index >= warmup:
                samples[name].append(response.elapsed * 1000)
    for connection in connections.values():
        await connection.close()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2000, help="measured rounds (each: one request per target)")
    parser.add_argument("--warmup", type=int, default=200, help="unmeasured rounds first")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers")
    parser.add_argument("--litellm", metavar="PATH", help="the litellm executable (its proxy), to measure side by side")
    parser.add_argument("--json", metavar="FILE", help="also write the raw percentiles here")
    harness.add_governed_argument(parser)
    harness.add_space_argument(parser)
    parser.add_argument("--observability", choices=("off", "on"),
                        help="off: no metrics, no tracing; on: metrics and tracing to a local OTLP receiver")
    args = parser.parse_args()
    install_uvloop()

    receiver, receiver_port = start_otlp_receiver() if args.observability == "on" else (None, None)
    app_env = observability_environment(args.observability, receiver_port)
    with harness.stack(["ok"], workers=args.workers, governed=args.governed, app_env=app_env,
                       space=args.space) as stack:
        connector = stack.connector("ok")
        upstream_path = "/ok/v1/chat/completions"
        json_headers = {"Content-Type": "application/json"}
        targets = {
            "direct": (stack.upstream_port, upstream_path, harness.chat_body(), json_headers),
            "execute-basic": (stack.app_port, *harness.target_request(stack, "basic", connector)),
            "execute-apikey": (stack.app_port, *harness.target_request(stack, "apikey", connector)),
        }
        openai_path, openai_body, openai_headers = harness.target_request(stack, "openai", connector)
        probe = asyncio.run(_probe(stack.app_port, openai_path, openai_headers))
        if probe == 200:
            targets["openai"] = (stack.app_port, openai_path, openai_body, openai_headers)
        else:
            print(f"OpenAI-compatible endpoint answered HTTP {probe}: not measured")
        litellm = None
        if args.litellm:
            litellm, litellm_port, _workdir = start_litellm(args.litellm, stack.upstream_port)
            litellm_target = (litellm_port, "/v1/chat/completions", harness.chat_body(),
                              {**json_headers, "Authorization": "Bearer " + LITELLM_MASTER_KEY})
        try:
            started = time.perf_counter()
            passes = [asyncio.run(measure(targets, args.rounds, args.warmup))]
            if litellm is not None:
                # A pass of its own, interleaved with direct requests as the gateway's is: interleaved with the
                # gateway, the work LiteLLM does after answering (background logging and cost tasks) ran into the
                # next gateway request on 2 CPUs and added up to 2 ms to the gateway's figures.
                passes.append(asyncio.run(measure({"direct": targets["direct"], "litellm": litellm_target},
                                                  args.rounds, args.warmup)))
            wall = time.perf_counter() - started
        finally:
            if litellm is not None:
                harness.stop(litellm)
        events = stack.count_events(connector)
        events_summary = stack.events_summary()
        scraped = scraped_executions(stack.app_port) if args.observability == "on" else None
    if receiver is not None:
        harness.stop(receiver)  # it prints the spans it received
    rows, results = [], {}
    for pass_number, samples in enumerate(passes):
        direct = samples["direct"]
        d50, d99 = percentile(direct, 0.5), percentile(direct, 0.99)
        for name, values in samples.items():
            label = name if pass_number == 0 or name != "direct" else "direct (LiteLLM pass)"
            p50, p90, p99 = percentile(values, 0.5), percentile(values, 0.9), percentile(values, 0.99)
            added50 = p50 - d50 if name != "direct" else 0.0
            added99 = p99 - d99 if name != "direct" else 0.0
            rows.append([label, len(values), p50, p90, p99, added50, added99])
            results[label] = {"p50": p50, "p90": p90, "p99": p99, "added_p50": added50, "added_p99": added99}
    print(harness.machine_description())
    print_table(
        f"Sequential keep-alive latency, ms ({args.rounds} rounds after {args.warmup} warm-up, {args.workers} workers, "
        f"{wall:.1f} s)",
        ["target", "n", "p50", "p90", "p99", "added p50", "added p99"],
        rows,
    )
    if "litellm" in results:
        gateway = results["execute-basic"]["added_p50"]
        print(f"LiteLLM added p50 / gateway (execute-basic) added p50 = {results['litellm']['added_p50'] / gateway:.1f}x")
    gateway_targets = [name for name in passes[0] if name.startswith(("execute", "openai"))]
    expected = (args.rounds + args.warmup) * len(gateway_targets) + (1 if probe == 200 else 0)  # + the probe
    print(f"events recorded for the connector in space {stack.space}: {events} (expected {expected}: one per gateway "
          f"request); {events_summary}")
    if scraped is not None:
        print(f"connectors_executions_total in a scrape of /metrics: {scraped:.0f}")
    print(f"observability: {args.observability or 'app defaults (metrics on, tracing off)'}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


async def _get(port: int, path: str, headers: dict):
    connection = await Connection("127.0.0.1", port).open()
    try:
        return await connection.request("GET", path, b"", headers)
    finally:
        await connection.close()


async def _probe(port: int, path: str, headers: dict) -> int:
    connection = await Connection("127.0.0.1", port).open()
    try:
        return (await connection.request("POST", path, harness.chat_body(), headers)).status
    finally:
        await connection.close()


if __name__ == "__main__":
    main()
