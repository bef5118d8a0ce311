"""Start-up: production refuses to start without its secrets; malformed values name the variable."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GOOD_KEY = "p6S0Bi6Mn5mDNjsC5nWxGZA0Y0pvjW2sJqHjeIuQoxo="


def start(**env) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in {
        "DEBUG", "SECRET_KEY", "CONNECTORS_ENCRYPTION_KEYS", "ACTIONS_CONFIG", "DATABASE_URL", "ALLOWED_HOSTS"}}
    clean.update({"ENV_FILE": "", "DJANGO_SETTINGS_MODULE": "connectors_admin.settings", **env})
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); print('started')"],
        cwd=ROOT, env=clean, capture_output=True, text=True, timeout=60,
    )


def test_production_refuses_to_start_without_secrets():
    result = start(DEBUG="false")
    assert result.returncode != 0
    assert "SECRET_KEY and CONNECTORS_ENCRYPTION_KEYS must be set when DEBUG is off" in result.stderr


def test_production_refuses_to_start_without_the_encryption_keys():
    result = start(DEBUG="false", SECRET_KEY="x" * 50)
    assert result.returncode != 0
    assert "CONNECTORS_ENCRYPTION_KEYS must be set when DEBUG is off" in result.stderr


def test_production_starts_with_its_secrets():
    result = start(DEBUG="false", SECRET_KEY="x" * 50, CONNECTORS_ENCRYPTION_KEYS=GOOD_KEY)
    assert result.returncode == 0, result.stderr
    assert "started" in result.stdout


@pytest.mark.parametrize(
    "env, message",
    [
        ({"DEBUG": "maybe"}, "DEBUG must be true or false"),
        ({"CONNECTORS_ENCRYPTION_KEYS": "not-a-key"}, "CONNECTORS_ENCRYPTION_KEYS: key number 1 is not a Fernet key"),
        ({"CONNECTORS_ENCRYPTION_KEYS": f"{GOOD_KEY},short"}, "key number 2 is not a Fernet key"),
        ({"DATABASE_URL": "nosuchdb://x"}, "DATABASE_URL"),
        ({"ACTIONS_CONFIG": "/nonexistent/actions.yml"}, "ACTIONS_CONFIG: cannot read /nonexistent/actions.yml"),
        ({"BASIC_AUTH_CACHE_SECONDS": "soon"}, "BASIC_AUTH_CACHE_SECONDS must be a whole number"),
        ({"STREAM_MAX_BYTES": "lots"}, "STREAM_MAX_BYTES must be a size such as 1mb"),
        ({"STREAM_MAX_EVENT_BYTES": "0"}, "STREAM_MAX_EVENT_BYTES must be a size such as 1mb"),
        ({"STREAM_MAX_SECONDS": "0"}, "STREAM_MAX_SECONDS must be a whole number above 0"),
        ({"METRICS_ALLOWED_NETWORKS": "10.0.0.0/8,not-a-network"}, "METRICS_ALLOWED_NETWORKS:"),
        ({"METRICS_ENABLED": "perhaps"}, "METRICS_ENABLED must be true or false"),
        ({"METRICS_MODELS_PER_CONNECTOR": "many"}, "METRICS_MODELS_PER_CONNECTOR must be a whole number"),
        ({"OTEL_SDK_DISABLED": "perhaps"}, "OTEL_SDK_DISABLED must be true or false"),
        ({"DATABASE_WAIT_SECONDS": "soon"}, "DATABASE_WAIT_SECONDS must be a number of seconds"),
        ({"DATABASE_WAIT_SECONDS": "0"}, "DATABASE_WAIT_SECONDS must be above 0 and at most 60"),
    ],
)
def test_a_malformed_value_names_its_variable(env, message):
    result = start(**{"DEBUG": "false", "SECRET_KEY": "x" * 50, "CONNECTORS_ENCRYPTION_KEYS": GOOD_KEY, **env})
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and message in result.stderr


def test_the_secret_values_are_not_echoed_in_errors():
    result = start(DEBUG="false", SECRET_KEY="x" * 50, CONNECTORS_ENCRYPTION_KEYS="SUPERSECRETBUTBROKEN")
    assert "SUPERSECRETBUTBROKEN" not in result.stderr


def test_the_development_env_file_is_written_once(tmp_path):
    target = tmp_path / ".env"
    first = subprocess.run([sys.executable, "-m", "connectors_admin.devenv", str(target)], cwd=ROOT,
                           capture_output=True, text=True, check=True)
    assert "Created" in first.stdout
    content = target.read_text()
    assert "DEBUG=true" in content and "SECRET_KEY=" in content and "CONNECTORS_ENCRYPTION_KEYS=" in content
    subprocess.run([sys.executable, "-m", "connectors_admin.devenv", str(target)], cwd=ROOT, check=True)
    assert target.read_text() == content
    assert oct(target.stat().st_mode & 0o777) == "0o600"


def test_debug_mode_starts_with_the_env_file(tmp_path):
    env_file = tmp_path / ".env"
    subprocess.run([sys.executable, "-m", "connectors_admin.devenv", str(env_file)], cwd=ROOT, check=True)
    result = start(ENV_FILE=str(env_file))
    assert result.returncode == 0, result.stderr


def test_the_stream_limits_take_sizes_with_units_and_default_to_long_answers():
    code = ("import django; django.setup(); from django.conf import settings as s; "
            "print(s.STREAM_MAX_BYTES, s.STREAM_MAX_SECONDS, s.STREAM_MAX_EVENT_BYTES)")
    base = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_")}
    base.update(ENV_FILE="", DJANGO_SETTINGS_MODULE="connectors_admin.settings", DEBUG="false", SECRET_KEY="x" * 50,
                CONNECTORS_ENCRYPTION_KEYS=GOOD_KEY)
    for extra, expected in (
        ({}, f"{64 * 1024 * 1024} 3600 {1024 * 1024}"),
        ({"STREAM_MAX_BYTES": "8mb", "STREAM_MAX_SECONDS": "90", "STREAM_MAX_EVENT_BYTES": "2048"},
         f"{8 * 1024 * 1024} 90 2048"),
    ):
        result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**base, **extra}, capture_output=True,
                                text=True, timeout=60)
        assert result.stdout.split("\n")[0] == expected, result.stderr


@pytest.mark.parametrize("env, message", [
    ({"OIDC_GROUP_MAP": "admins"}, "OIDC_GROUP_MAP: expected 'idp-group=Local group;...', got 'admins'"),
    ({"OIDC_ISSUER_URL": "https://idp.example.com/realms/x"}, "OIDC_ISSUER_URL and OIDC_CLIENT_ID must be set together"),
    ({"OIDC_ISSUER_URL": "idp.example.com", "OIDC_CLIENT_ID": "x"}, "OIDC_ISSUER_URL must be an http(s) URL"),
    ({"OIDC_ISSUER_URL": "https://idp.example.com", "OIDC_CLIENT_ID": "x", "OIDC_SCOPES": "email"},
     "OIDC_SCOPES must include openid"),
    ({"TRUSTED_PROXIES": "10.0.0.0/8,not-an-address"}, "TRUSTED_PROXIES: 'not-an-address' is not an IP address"),
    ({"LOCAL_LOGIN_SUPERUSERS_ONLY": "maybe"}, "LOCAL_LOGIN_SUPERUSERS_ONLY must be true or false"),
])
def test_malformed_sign_on_and_audit_settings_name_the_variable(env, message):
    result = start(DEBUG="true", CONNECTORS_ENCRYPTION_KEYS=GOOD_KEY, **env)
    assert result.returncode != 0
    assert message in result.stderr


def test_a_complete_sign_on_configuration_starts():
    result = start(DEBUG="true", CONNECTORS_ENCRYPTION_KEYS=GOOD_KEY, OIDC_ISSUER_URL="https://idp.example.com/",
                   OIDC_CLIENT_ID="connectors-admin", OIDC_GROUP_MAP="admins=Connector admins; root = superuser",
                   TRUSTED_PROXIES="10.0.0.0/8, 192.0.2.1")
    assert result.returncode == 0, result.stderr


def test_tracing_is_on_only_with_an_otlp_endpoint():
    code = "import django; django.setup(); from django.conf import settings; print(settings.TRACING_ENABLED)"
    base = {"DEBUG": "true", "CONNECTORS_ENCRYPTION_KEYS": GOOD_KEY}
    outputs = []
    for env in ({}, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"},
                {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"},
                {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_SDK_DISABLED": "true"},
                {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_TRACES_EXPORTER": "none"}):
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "DEBUG", "SECRET_KEY"))}
        clean.update({"ENV_FILE": "", "DJANGO_SETTINGS_MODULE": "connectors_admin.settings", **base, **env})
        result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=clean, capture_output=True, text=True,
                                timeout=60)
        outputs.append(result.stdout.strip())
    assert outputs == ["False", "True", "True", "False", "False"]
