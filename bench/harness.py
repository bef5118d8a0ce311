"""What every benchmark starts and tears down: a PostgreSQL bench database, the upstream, the app under uvicorn.

The app runs with the production settings (DEBUG off, SECRET_KEY and CONNECTORS_ENCRYPTION_KEYS set, the event
log on PostgreSQL) in its own processes; the benchmark process only generates load and reads the results.

With spaces in use (``--space ID``, ``add_space_argument``: bench.latency, bench.throughput, bench.server_cpu,
bench.concurrency, bench.stages) the bench connectors and the API key are in a second space ``ID``, the HTTP Basic user
holds its role in that space only, a connector of the default space sits beside them, and every target calls
``/s/ID/...`` (``target_request``). Before the benchmark, ``check_spaces`` makes sure the space check has
something to tell apart: the default space's connector and the bench connector outside its space answer 404.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
POSTGRES_ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with {process.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on port {port} after {timeout} s")


def stop(process: subprocess.Popen, timeout: float = 20) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


@contextmanager
def bench_database():
    """A fresh PostgreSQL database for one run; dropped afterwards. Yields its DATABASE_URL."""
    import psycopg

    name = f"bench_{uuid.uuid4().hex[:10]}"
    admin_url = POSTGRES_ADMIN_URL.replace("postgres://", "postgresql://", 1)
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def app_environment(database_url: str, extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_"))}
    env.update(
        ENV_FILE="",
        DEBUG="false",
        SECRET_KEY="bench-" + uuid.uuid4().hex,
        CONNECTORS_ENCRYPTION_KEYS="p6S0Bi6Mn5mDNjsC5nWxGZA0Y0pvjW2sJqHjeIuQoxo=",
        DATABASE_URL=database_url,
        ALLOWED_HOSTS="127.0.0.1,localhost",
        LOG_LEVEL="WARNING",
        PYTHONPATH=str(ROOT),
    )
    env.update(extra or {})
    return env


@dataclass
class Stack:
    """A running bench setup: upstream, app, credentials."""

    upstream_port: int
    app_port: int
    database_url: str
    seed: dict
    app: subprocess.Popen | None = None
    upstream: subprocess.Popen | None = None
    extra: dict = field(default_factory=dict)

    @property
    def basic_header(self) -> str:
        raw = f"{self.seed['username']}:{self.seed['password']}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    @property
    def api_key_header(self) -> str:
        return "ApiKey " + self.seed["api_key"]

    def connector(self, scenario: str) -> str:
        return self.seed["connectors"][scenario]

    @property
    def space(self) -> str:
        """The space of the bench connectors and the API key: ``default`` unless the run was given ``--space``."""
        return self.seed.get("space") or "default"

    @property
    def path_prefix(self) -> str:
        """``/s/<space>`` with spaces in use, else nothing (the default space's URLs)."""
        return f"/s/{self.space}" if self.seed.get("space") else ""

    def server_rss_kib(self) -> int:
        """Resident memory of the app's worker processes (the master only supervises), summed."""
        workers = children(self.app.pid) or [self.app.pid]
        return sum(rss_kib(pid) for pid in workers)

    def count_events(self, connector_id: str | None = None) -> int:
        """Events of the connector (every event: None) recorded in the bench's space (``space``): an event recorded
        in another space is not counted, so a benchmark's "one event per request" check fails on it."""
        import psycopg

        with psycopg.connect(self.database_url.replace("postgres://", "postgresql://", 1)) as conn:
            if connector_id is None:
                return conn.execute("SELECT count(*) FROM usage_executionevent WHERE space_id = %s",
                                    (self.space,)).fetchone()[0]
            return conn.execute(
                "SELECT count(*) FROM usage_executionevent WHERE connector_id = %s AND space_id = %s",
                (connector_id, self.space),
            ).fetchone()[0]

    def events_by_space(self) -> dict[str, int]:
        """Every event recorded, counted by its space: what a benchmark prints, so that the space shows."""
        import psycopg

        with psycopg.connect(self.database_url.replace("postgres://", "postgresql://", 1)) as conn:
            return dict(conn.execute(
                "SELECT space_id, count(*) FROM usage_executionevent GROUP BY space_id ORDER BY space_id"
            ).fetchall())

    def events_summary(self) -> str:
        """One line for a benchmark's output: the events by space, and the space the bench's calls are made in."""
        counts = ", ".join(f"{space} {count}" for space, count in self.events_by_space().items()) or "none"
        return f"events by space: {counts} (the bench connector's space: {self.space})"

    def count_rollup_requests(self, connector_id: str) -> int:
        import psycopg

        with psycopg.connect(self.database_url.replace("postgres://", "postgresql://", 1)) as conn:
            value = conn.execute(
                "SELECT coalesce(sum(requests), 0) FROM usage_usagerollup WHERE connector_id = %s", (connector_id,)
            ).fetchone()[0]
            return int(value)


def start_upstream(port: int, kind: str = "fast") -> subprocess.Popen:
    """``fast`` (bench/upstream.py), ``hostile`` (tests/servers/hostile_upstream.py) or anything else: tests/servers/fake_openai.py."""
    modules = {"fast": ["-m", "bench.upstream", "--port", str(port)], "hostile": ["-m", "tests.servers.hostile_upstream", str(port)]}
    module = modules.get(kind, ["-m", "tests.servers.fake_openai", str(port)])
    process = subprocess.Popen([PYTHON, *module], cwd=ROOT, stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(ROOT)})
    wait_for_port(port, process)
    return process


def start_app(port: int, env: dict, workers: int = 2, app: str = "connectors_admin.asgi:application",
              command_prefix: tuple[str, ...] = (), start_seconds: float = 30) -> subprocess.Popen:
    """uvicorn serving ``app``; ``command_prefix`` runs it under another program (bench/instructions.py: valgrind),
    which may need more than the usual ``start_seconds``."""
    command = [
        *command_prefix, str(Path(PYTHON).parent / "uvicorn"), app,
        "--host", "127.0.0.1", "--port", str(port),
        "--workers", str(workers), "--loop", "uvloop", "--http", "httptools",
        "--no-access-log", "--log-level", "warning", "--backlog", "4096",
        "--timeout-graceful-shutdown", "10",
    ]
    process = subprocess.Popen(command, cwd=ROOT, env=env)
    wait_for_port(port, process, timeout=max(60, start_seconds))
    # Every worker must be up (each listens on the shared socket): wait until the master has them all.
    deadline = time.monotonic() + start_seconds
    while len(children(process.pid)) < (workers if workers > 1 else 0) and time.monotonic() < deadline:
        time.sleep(0.05)
    # And each worker must have imported the app and run its lifespan's start-up, which starts its event writer
    # thread; it listens right after. A load started before (this waited a fixed second until 2026-12-07) is
    # accepted by the worker that is ready, which then serves those keep-alive connections alone: the throughput
    # figures of a 2-worker run were those of one worker, more or less at random.
    while not command_prefix and time.monotonic() < deadline and not all(  # (one worker listens after its start-up)
            has_thread(pid, "event-writer") for pid in (worker_pids(process.pid) if workers > 1 else [process.pid])):
        time.sleep(0.05)
    time.sleep(0.5)
    return process


def worker_pids(pid: int) -> list[int]:
    """uvicorn's worker processes: its children but multiprocessing's resource tracker."""
    def is_worker(child: int) -> bool:
        try:
            return b"resource_tracker" not in Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            return False
    return [child for child in children(pid) if is_worker(child)]


def cpu_seconds(pid: int | str) -> float:
    """The process's user and system CPU time so far (/proc)."""
    return sum(user_and_system_seconds(pid))


def user_and_system_seconds(pid: int | str) -> tuple[float, float]:
    """The process's user and system CPU time so far, apart (/proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick  # utime, stime


def postgres_cpu_seconds() -> float:
    """The CPU time of every PostgreSQL process on the machine so far (/proc): the server's share of a benchmark."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().startswith("postgres"):
                    total += cpu_seconds(entry.name)
            except OSError:
                pass  # a process that ended meanwhile
    return total


class CpuMeter:
    """The CPU that ``pids`` (user and system time, summed over them) and PostgreSQL spent from ``start()`` to
    ``stop()``, in seconds: what bench.server_cpu and bench.paired charge to a batch of calls."""

    def __init__(self, pids: list[int]):
        self.pids = pids
        self.user = self.system = self.postgres = 0.0

    def start(self) -> CpuMeter:
        self._before = [user_and_system_seconds(pid) for pid in self.pids]
        self._postgres_before = postgres_cpu_seconds()
        return self

    def stop(self) -> CpuMeter:
        self.postgres = postgres_cpu_seconds() - self._postgres_before
        after = [user_and_system_seconds(pid) for pid in self.pids]
        self.user = sum(a[0] - b[0] for a, b in zip(after, self._before, strict=True))
        self.system = sum(a[1] - b[1] for a, b in zip(after, self._before, strict=True))
        return self


def has_thread(pid: int, name: str) -> bool:
    try:
        return any((task / "comm").read_text().strip() == name for task in Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return False


@contextmanager
def stack(scenarios: list[str], *, workers: int = 2, upstream: str = "fast", app_env: dict | None = None,
          governed: str = "none", app: str = "connectors_admin.asgi:application", space: str | None = None,
          command_prefix: tuple[str, ...] = (), start_seconds: float = 30,
          redis_url: str = "redis://127.0.0.1:6379/13"):
    """Start everything for ``scenarios``; yields a Stack; stops everything and drops the database.

    ``governed``: "none", or "database" / "redis" to put a budget and a rate limit on every connector (bench/seed.py),
    counted in the database or in Redis (``redis_url``, by default 127.0.0.1:6379's database 13, emptied first). ``app``: the ASGI application
    uvicorn serves (bench/stage_probe.py wraps the real one). ``space``: run with spaces in use (the module's
    docstring); the space check is made once (``check_spaces``) before the stack is yielded.
    """
    with ExitStack() as stack_:
        database_url = stack_.enter_context(bench_database())
        app_env = dict(app_env or {})
        if governed != "none":
            app_env["BENCH_GOVERNED"] = "1"
            app_env["REDIS_URL"] = redis_url if governed == "redis" else ""
            if governed == "redis":
                import redis

                redis.Redis.from_url(app_env["REDIS_URL"]).flushdb()
        env = app_environment(database_url, app_env)
        subprocess.run([PYTHON, "manage.py", "migrate", "--no-input", "-v", "0"], cwd=ROOT, env=env, check=True)
        # As `make run` and a production deployment do (whitenoise serves the collected files).
        subprocess.run([PYTHON, "manage.py", "collectstatic", "--no-input", "-v", "0"], cwd=ROOT, env=env, check=True)
        upstream_port = free_port()
        upstream_process = start_upstream(upstream_port, upstream)
        stack_.callback(stop, upstream_process)
        seed_output = subprocess.run(
            [PYTHON, "-m", "bench.seed", *(["--space", space] if space else []), f"http://127.0.0.1:{upstream_port}",
             *scenarios],
            cwd=ROOT, env=env, check=True, capture_output=True, text=True,
        ).stdout
        seed = json.loads(seed_output.strip().splitlines()[-1])
        app_port = free_port()
        app = start_app(app_port, env, workers, app, command_prefix, start_seconds)
        stack_.callback(stop, app)
        running = Stack(upstream_port, app_port, database_url, seed, app=app, upstream=upstream_process)
        if space:
            check_spaces(running, scenarios[0])
        yield running


def execute_body(message: str = "Hello world") -> bytes:
    body = json.dumps({"messages": [{"role": "user", "content": message}]})
    return json.dumps({"params": {"subAction": "run", "subActionParams": {"body": body}}}).encode()


def chat_body(message: str = "Hello world", stream: bool = False) -> bytes:
    payload = {"model": "gpt-4o", "messages": [{"role": "user", "content": message}]}
    if stream:
        payload["stream"] = True
    return json.dumps(payload).encode()


def add_space_argument(parser) -> None:
    parser.add_argument("--space", metavar="ID", help="run with spaces in use: the bench connector and the API key in "
                        "a second space ID, the Basic user's role granted there only, every call under /s/ID/ "
                        "(bench/harness.py)")


def add_governed_argument(parser) -> None:
    parser.add_argument("--governed", choices=("none", "database", "redis"), default="none",
                        help="a budget and a rate limit active on the connector, counted in the database or Redis")


def machine_description() -> str:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = next(int(row.split()[1]) for row in Path("/proc/meminfo").read_text().splitlines() if row.startswith("MemTotal"))
    return f"{os.cpu_count()} CPUs ({cpu}), {mem_kib / 1024 / 1024:.1f} GiB RAM, Python {sys.version.split()[0]}"


def target_request(stack, target: str, connector: str) -> tuple[str, bytes, dict]:
    """The path, body and headers of one call of ``target``: ``openai`` (the OpenAI-compatible endpoint, Bearer key),
    ``apikey`` or ``basic`` (``_execute`` with an API key or HTTP Basic); under ``/s/<space>/`` with spaces in use."""
    if target == "openai":
        headers = {"Content-Type": "application/json", "Authorization": "Bearer " + stack.seed["api_key"]}
        return f"{stack.path_prefix}/api/openai/{connector}/v1/chat/completions", chat_body(), headers
    headers = {"Content-Type": "application/json", "kbn-xsrf": "true",
               "Authorization": stack.api_key_header if target == "apikey" else stack.basic_header}
    return f"{stack.path_prefix}/api/actions/connector/{connector}/_execute", execute_body(), headers


def check_spaces(stack, scenario: str) -> None:
    """With spaces in use, before any measurement, that the space check has something to tell apart and tells it:
    the default space's connector called under the bench space's prefix must answer 404 to every target (an object
    of another space is answered as a missing one), and the bench connector called without the prefix (in the
    default space, where the bench's credentials hold nothing) 404 or 403 (no role there, whichever connector); none
    of these calls may record an event. Exits otherwise; the benchmark's own calls then show that the bench
    connector answers in its space."""
    import asyncio

    from bench.loadgen import Connection

    async def status_of(path: str, body: bytes, headers: dict) -> tuple[int, bytes]:
        connection = await Connection("127.0.0.1", stack.app_port).open()
        try:
            response = await connection.request("POST", path, body, headers)
        finally:
            await connection.close()
        return response.status, response.body

    connector, other = stack.connector(scenario), stack.seed["default_space_connector"]
    prefix = stack.path_prefix
    before = stack.events_by_space()
    seen = []
    for target in ("basic", "apikey", "openai"):
        path, body, headers = target_request(stack, target, connector)
        for wrong, allowed in ((path.replace(f"/{connector}/", f"/{other}/"), {404}),
                               (path.removeprefix(prefix), {403, 404})):
            status, answer = asyncio.run(status_of(wrong, body, headers))
            if status not in allowed:
                raise SystemExit(f"spaces: {target} {wrong} answered HTTP {status}, not {sorted(allowed)}: "
                                 f"{answer[:300]!r}")
            seen.append(f"{target} {'other connector' if other in wrong else 'no prefix'} {status}")
    if stack.events_by_space() != before:
        raise SystemExit(f"spaces: calls across spaces recorded events: {before} -> {stack.events_by_space()}")
    print(f"spaces: bench connector {connector} in space {stack.space}, called under {prefix}/; across spaces "
          f"({other} of the default space under {prefix}/, {connector} without the prefix): {', '.join(seen)}; "
          "no event recorded", flush=True)
