"""A Kibana 9.x script and a Kibana 8.x script (tests/api/kibana_scripts/, written from Kibana's API documentation:
create, get, list, update, execute, delete) run unchanged, as separate processes, against the app served by
uvicorn over a real socket, with Kibana's OpenAI simulator as the provider."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PASSWORD
from tests.servers.kibana_simulator import OpenAISimulator

pytest_plugins = ["tests.servers.asgi_server"]

SCRIPTS = Path(__file__).resolve().parent / "kibana_scripts"


@pytest.mark.parametrize("script", ["kibana_9x.py", "kibana_8x.py"])
def test_a_kibana_script_runs_unchanged_against_the_app(script, asgi_live_server, admin_user, actions_config,
                                                       recorded_events):
    actions_config({"allowedHosts": ["127.0.0.1"]})
    simulator = OpenAISimulator()
    try:
        env = {**os.environ, "KIBANA_URL": asgi_live_server.url, "KIBANA_USER": admin_user.username,
               "KIBANA_PASSWORD": PASSWORD, "OPENAI_URL": simulator.start()}
        done = subprocess.run([sys.executable, str(SCRIPTS / script)], env=env, capture_output=True, text=True,
                              timeout=120)
    finally:
        simulator.close()
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "ok"
    recorded_events.wait_for(1)  # the execution was recorded like any other
