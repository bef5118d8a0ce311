"""Loaded by pytest (``-p tests.environment``) before Django reads its settings: a test environment that does not
depend on the developer's .env file. DATABASE_URL is left alone so that CI can run the suite on PostgreSQL."""

import os
import tempfile

os.environ["ENV_FILE"] = ""
os.environ.setdefault("DEBUG", "false")
os.environ.setdefault("SECRET_KEY", "test-secret-key-not-for-production")
os.environ.setdefault("CONNECTORS_ENCRYPTION_KEYS", "p6S0Bi6Mn5mDNjsC5nWxGZA0Y0pvjW2sJqHjeIuQoxo=")
os.environ.setdefault("ALLOWED_HOSTS", "localhost,127.0.0.1,testserver")
# Each test run spools into a folder of its own (tests that look at the spool override it per test).
os.environ.setdefault("EVENT_SPOOL_DIR", tempfile.mkdtemp(prefix="event-spool-"))


def redis_test_url(offset: int = 0) -> str:
    """A Redis database of the tests' own on 127.0.0.1:6379: 15 and 14 by default (``offset`` 0 and 1). CI runs the
    SQLite and the PostgreSQL suites at once and gives the second another pair (``TEST_REDIS_DB=13``)."""
    return f"redis://127.0.0.1:6379/{int(os.environ.get('TEST_REDIS_DB', '15')) - offset}"
