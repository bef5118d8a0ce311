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
