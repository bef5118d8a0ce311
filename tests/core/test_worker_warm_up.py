"""A new server process imports its URL configuration and builds its TLS context at start-up, not on its first request;
and it settles its garbage collector (connectors_admin/worker_warm_up.py).

Run in a fresh interpreter (this test process has long imported everything): the ASGI application's lifespan
start-up, then, before any request, what the first request used to load is there.
"""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

STARTUP = """
import asyncio, gc, sys
from connectors_admin import asgi
from connectors.outbound.transport import ssl_context_for

assert "connectors.api.kibana" not in sys.modules, "the views were imported before the start-up"

async def start_and_stop():
    messages = asyncio.Queue()
    for kind in ("lifespan.startup", "lifespan.shutdown"):
        messages.put_nowait({"type": kind})
    sent = []

    async def send(message):
        sent.append(message["type"])
        if message["type"] == "lifespan.startup.complete":
            print("views imported:", "connectors.api.kibana" in sys.modules)
            print("TLS contexts built:", ssl_context_for.cache_info().currsize)
            print("objects frozen:", gc.get_freeze_count() > 10_000, "youngest threshold:", gc.get_threshold()[0])

    await asgi.application({"type": "lifespan"}, messages.get, send)
    print("lifespan:", sent)

asyncio.run(start_and_stop())
"""


def test_the_lifespan_start_up_loads_what_the_first_request_used_to(tmp_path):
    env = {key: value for key, value in os.environ.items() if key not in ("DATABASE_URL", "ACTIONS_CONFIG", "REDIS_URL")}
    env.update({
        "ENV_FILE": "",
        "DEBUG": "false",
        "SECRET_KEY": "warm-up-test-secret",
        "CONNECTORS_ENCRYPTION_KEYS": "p6S0Bi6Mn5mDNjsC5nWxGZA0Y0pvjW2sJqHjeIuQoxo=",
        "DJANGO_SETTINGS_MODULE": "connectors_admin.settings",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
    })
    result = subprocess.run([sys.executable, "-c", STARTUP], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "views imported: True" in result.stdout
    assert "TLS contexts built: 1" in result.stdout
    # What the process has loaded is out of the garbage collector's sight, and its youngest generation waits longer.
    assert "objects frozen: True youngest threshold: 10000" in result.stdout
    assert "lifespan: ['lifespan.startup.complete', 'lifespan.shutdown.complete']" in result.stdout
