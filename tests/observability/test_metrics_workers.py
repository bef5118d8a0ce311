"""Prometheus multi-process mode: the app with 2 worker processes, under uvicorn's supervisor and under gunicorn,
every worker counted in a scrape.

No PROMETHEUS_MULTIPROC_DIR is given: the workers find their supervisor's directory themselves (settings.py).
The server has its own SQLite database, seeded as the benchmarks seed theirs.
"""

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bench import harness

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "workers-metrics-token-0123456789"


BIN = Path(sys.executable).parent
SERVERS = {
    "uvicorn": lambda port: [str(BIN / "uvicorn"), "connectors_admin.asgi:application", "--host", "127.0.0.1",
                             "--port", str(port), "--workers", "2", "--log-level", "warning", "--no-access-log"],
    "gunicorn": lambda port: [str(BIN / "gunicorn"), "connectors_admin.asgi:application", "-k",
                              "uvicorn.workers.UvicornWorker", "-w", "2", "-b", f"127.0.0.1:{port}",
                              "--log-level", "warning"],
}


@pytest.fixture(params=sorted(SERVERS))
def two_worker_server(request, tmp_path, upstream):
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PROMETHEUS_", "OTEL_"))}
    env.update(DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}", ENV_FILE="", METRICS_BEARER_TOKEN=TOKEN,
               LOG_LEVEL="WARNING", PYTHONPATH=str(ROOT))
    subprocess.run([sys.executable, "manage.py", "migrate", "--no-input", "-v", "0"], cwd=ROOT, env=env, check=True)
    seeded = subprocess.run([sys.executable, "-m", "bench.seed", upstream.base_url, "ok"], cwd=ROOT, env=env,
                            check=True, capture_output=True, text=True).stdout
    seed = json.loads(seeded.strip().splitlines()[-1])
    port = harness.free_port()
    server = subprocess.Popen(SERVERS[request.param](port), cwd=ROOT, env=env)
    try:
        harness.wait_for_port(port, server, timeout=60)
        yield port, seed, server
    finally:
        harness.stop(server)
        shutil.rmtree(Path(tempfile.gettempdir()) / f"connectors-admin-metrics-{server.pid}", ignore_errors=True)


async def _execute_batch(port: int, seed: dict, count: int) -> None:
    body = json.dumps({"params": {"subAction": "run", "subActionParams": {
        "body": json.dumps({"messages": [{"role": "user", "content": "Hi"}]})}}})
    url = f"http://127.0.0.1:{port}/api/actions/connector/{seed['connectors']['ok']}/_execute"

    async def one():
        # A connection of its own each: the kernel hands them to whichever worker accepts first.
        async with httpx.AsyncClient(timeout=120) as client:  # generous: a cold worker on a busy machine
            response = await client.post(url, content=body, headers={
                "Authorization": f"ApiKey {seed['api_key']}", "Content-Type": "application/json"})
            assert response.status_code == 200 and response.json()["status"] == "ok", response.text

    await asyncio.gather(*(one() for _ in range(count)))


def _executions_in_a_scrape(port: int) -> float:
    response = httpx.get(f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120)
    assert response.status_code == 200
    return sum(sample.value for family in text_string_to_metric_families(response.text)
               for sample in family.samples if sample.name == "connectors_executions_total")


def test_every_worker_is_counted_whichever_answers_the_scrape(two_worker_server):
    port, seed, server = two_worker_server
    directory = Path(tempfile.gettempdir()) / f"connectors-admin-metrics-{server.pid}"
    sent = 0
    # Until both workers have executed something (bounded: a worker that never accepts fails the test).
    for _batch in range(20):
        asyncio.run(_execute_batch(port, seed, 10))
        sent += 10
        if len({path.stem.rsplit("_", 1)[-1] for path in directory.glob("counter_*.db")}) >= 2:
            break
    workers = {path.stem.rsplit("_", 1)[-1] for path in directory.glob("counter_*.db")}
    assert len(workers) == 2, f"only {workers} counted anything after {sent} executions"
    # Each scrape, on a new connection, may be answered by either worker: all give the sum of both.
    assert [_executions_in_a_scrape(port) for _ in range(6)] == [sent] * 6
