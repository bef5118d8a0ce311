"""Settings for connectors-admin. The only module that reads the environment (through django-environ).

Every variable is listed in .env.example and the README. With DEBUG off, the secrets must be set or start-up
stops with a message naming what is missing; `make run` writes local development values into an ignored .env.
"""

import ipaddress
import math
import multiprocessing
import os
import tempfile
from pathlib import Path

import environ
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured

from connectors.actions_config import ActionsConfigError, load_actions_config, parse_byte_size

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
ENV_FILE = env.str("ENV_FILE", default=str(BASE_DIR / ".env"))
if ENV_FILE and Path(ENV_FILE).is_file():
    environ.Env.read_env(ENV_FILE)


def _bool(name: str, default: bool) -> bool:
    raw = env.str(name, default="").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, got {raw!r}")


def _int(name: str, default: int) -> int:
    raw = env.str(name, default="").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, got {raw!r}") from None


def _positive_int(name: str, default: int) -> int:
    value = _int(name, default)
    if value <= 0:
        raise ImproperlyConfigured(f"{name} must be a whole number above 0, got {value}")
    return value


def _byte_size(name: str, default: int) -> int:
    """A size in bytes, or with Kibana's units as ACTIONS_CONFIG takes them: ``64mb``, ``512kb`` (binary)."""
    raw = env.str(name, default="").strip()
    if not raw:
        return default
    try:
        return parse_byte_size(raw, name)
    except ActionsConfigError as exc:
        raise ImproperlyConfigured(str(exc)) from None


def _fernet_keys(name: str) -> list[str]:
    keys = [k.strip() for k in env.str(name, default="").split(",") if k.strip()]
    for position, key in enumerate(keys, start=1):
        try:
            Fernet(key)
        except ValueError:
            raise ImproperlyConfigured(
                f"{name}: key number {position} is not a Fernet key (32 url-safe base64-encoded bytes); "
                "make one with: python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"
            ) from None
    return keys


DEBUG = _bool("DEBUG", default=False)

SECRET_KEY = env.str("SECRET_KEY", default="")
CONNECTORS_ENCRYPTION_KEYS = _fernet_keys("CONNECTORS_ENCRYPTION_KEYS")
_missing = [name for name, value in (("SECRET_KEY", SECRET_KEY), ("CONNECTORS_ENCRYPTION_KEYS", CONNECTORS_ENCRYPTION_KEYS)) if not value]
if _missing and not DEBUG:
    raise ImproperlyConfigured(
        f"{' and '.join(_missing)} must be set when DEBUG is off. "
        "Set them in the environment or in the .env file (see .env.example); `make run` creates development values."
    )
if not SECRET_KEY:
    SECRET_KEY = "django-insecure-development-only"  # noqa: S105 - only ever used with DEBUG on
if not CONNECTORS_ENCRYPTION_KEYS:
    raise ImproperlyConfigured(
        "CONNECTORS_ENCRYPTION_KEYS must be set (even with DEBUG on, so that stored API keys stay readable); "
        "`make run` creates a development key in .env."
    )

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

try:
    ACTIONS_CONFIG = load_actions_config(env.str("ACTIONS_CONFIG", default=""))
except ActionsConfigError as exc:
    raise ImproperlyConfigured(f"ACTIONS_CONFIG: {exc}") from None

INSTALLED_APPS = [
    "connectors_admin.apps.ProjectConfig",  # process-wide set-up: the settings' plain lookup (settings_lookup.py)
    "connectors_admin.admin_site.ProductAdminConfig",  # django.contrib.admin, with a 403 for non-staff accounts
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "connectors",
    "connectors.spaces",  # spaces: each team its own connectors, keys, budgets and records (README "Spaces")
    "connectors.throttling",
    "connectors.accounts",  # single sign-on identities (README "Single sign-on")
    "connectors.audit",  # the audit trail (README "Audit trail")
    "usage",
    "usage.governance",
]

MIDDLEWARE = [
    "connectors.replicas.ReadAfterWriteMiddleware",  # first: it must see every write of the request
    "django.middleware.security.SecurityMiddleware",
    "connectors.spaces.middleware.space_middleware",  # /s/<space id>/ (README "Spaces"), before URL resolution
    "connectors_admin.csp.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # HTML pages only, with BREACH in mind: see the module.
    "connectors_admin.compression.HtmlGZipMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "connectors.audit.middleware.AuditContextMiddleware",
    "connectors.viewer_time_zone.ViewerTimeZoneMiddleware",  # times in the viewer's zone, remembered in a cookie
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "connectors_admin.database_outage.DatabaseOutageMiddleware",  # a 503 page, not 500, during a database outage
    "connectors_admin.error_pages.ProductNotFoundMiddleware",  # DEBUG only: the product's 404, not Django's URL list
]

ROOT_URLCONF = "connectors_admin.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "connectors.accounts.context_processors.single_sign_on",
                # After auth's: ``perms`` in the current space, and the header's space switcher.
                "connectors.access.context_processors.spaces",
                "connectors.replicas.replica_notice",
            ],
        },
    },
]

WSGI_APPLICATION = "connectors_admin.wsgi.application"
ASGI_APPLICATION = "connectors_admin.asgi.application"

# How long anything waits for a database connection before it takes the database as unavailable (then the APIs
# answer 503 and execution events go to the spool; README "Guarantees").
try:
    DATABASE_WAIT_SECONDS = env.float("DATABASE_WAIT_SECONDS", default=1.0)
except ValueError:
    raise ImproperlyConfigured("DATABASE_WAIT_SECONDS must be a number of seconds, such as 1 or 2.5") from None
if not 0 < DATABASE_WAIT_SECONDS <= 60:
    raise ImproperlyConfigured(f"DATABASE_WAIT_SECONDS must be above 0 and at most 60, got {DATABASE_WAIT_SECONDS}")
try:
    DATABASES = {"default": env.db_url("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
except (ImproperlyConfigured, ValueError, KeyError) as exc:
    raise ImproperlyConfigured(f"DATABASE_URL is not a database URL Django can use: {exc}") from None
if not DATABASES["default"].get("ENGINE", "").startswith("django.db.backends."):
    raise ImproperlyConfigured("DATABASE_URL must start with sqlite://, postgres:// or another scheme Django supports")
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets readers work while a writer commits; IMMEDIATE takes the write lock at BEGIN so that concurrent
    # writers queue on busy_timeout instead of failing with "database is locked" halfway through a transaction.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Django's backend, whose connections give up within DATABASE_WAIT_SECONDS and are refused at once while the
    # database is known to be down (connectors_admin/database_availability.py, README "Guarantees").
    DATABASES["default"]["ENGINE"] = "connectors_admin.postgresql"
    DATABASES["default"].setdefault("OPTIONS", {})
    # libpq counts connect_timeout in whole seconds, at least 2: a host that drops packets is given up on then.
    DATABASES["default"]["OPTIONS"].setdefault("connect_timeout", max(2, math.ceil(DATABASE_WAIT_SECONDS)))
    if _bool("DATABASE_POOL", default=True):
        # psycopg's pool: async views reach the database from worker threads, which makes per-thread persistent
        # connections useless; a pool keeps connections warm across requests and threads.
        DATABASES["default"]["OPTIONS"]["pool"] = {
            "min_size": 2,
            "max_size": _int("DATABASE_POOL_MAX_SIZE", default=20),
            "timeout": DATABASE_WAIT_SECONDS,
            # A failed connection attempt is given up on soon instead of being retried with a backoff that grows
            # to minutes: the next request for a connection starts a new attempt, so the pool has connections
            # again as soon as the database answers.
            "reconnect_timeout": DATABASE_WAIT_SECONDS,
        }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Read replicas (connectors/replicas.py): the dashboards, the Logs tab, the exports and the usage API read from a
# streaming replica of the primary when one is reachable and no more than REPLICA_MAX_LAG_SECONDS behind.
DATABASE_REPLICAS: list[str] = []
for _number, _url in enumerate((u.strip() for u in env.str("DATABASE_REPLICA_URLS", default="").split(",")), 1):
    if not _url:
        continue
    try:
        _replica = environ.Env.db_url_config(_url)
    except (ImproperlyConfigured, ValueError, KeyError) as exc:
        raise ImproperlyConfigured(f"DATABASE_REPLICA_URLS: URL number {_number} is not a database URL: {exc}") from None
    if _replica.get("ENGINE") != "django.db.backends.postgresql" or DATABASES["default"]["ENGINE"] != _replica["ENGINE"]:
        raise ImproperlyConfigured("DATABASE_REPLICA_URLS: replicas are PostgreSQL streaming replicas of a PostgreSQL DATABASE_URL")
    # Persistent connections, checked before reuse: a replica may restart between requests. Tests read the
    # primary's test database through it (TEST MIRROR).
    _replica.update({"CONN_MAX_AGE": 60, "CONN_HEALTH_CHECKS": True, "TEST": {"MIRROR": "default"}})
    _replica.setdefault("OPTIONS", {}).setdefault("connect_timeout", 2)
    DATABASES[f"replica_{_number}"] = _replica
    DATABASE_REPLICAS.append(f"replica_{_number}")
REPLICA_MAX_LAG_SECONDS = _positive_int("REPLICA_MAX_LAG_SECONDS", default=300)
DATABASE_ROUTERS = ["connectors.replicas.ReplicaRouter"]

# Raw events older than this many days are dropped automatically (whole day partitions on PostgreSQL) by the event
# writer and `manage.py maintain_usage_partitions`; the rollups keep their history. 0: kept for ever.
EVENT_RETENTION_DAYS = _int("EVENT_RETENTION_DAYS", default=0)
if EVENT_RETENTION_DAYS < 0:
    raise ImproperlyConfigured(f"EVENT_RETENTION_DAYS must be 0 (keep) or a number of days, got {EVENT_RETENTION_DAYS}")

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

AUTHENTICATION_BACKENDS = [
    "connectors.accounts.backends.LocalPasswordBackend",
    "connectors.accounts.backends.SsoSessionBackend",  # keeps the sessions that SSO sign-ins open
]

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATICFILES_FINDERS = [
    "django.contrib.staticfiles.finders.FileSystemFinder",
    "django.contrib.staticfiles.finders.AppDirectoriesFinder",
    # plotly.js from the pinned Python plotly package (vendor/plotly.min.js): no 4 MB copy in git, never a CDN.
    "connectors_admin.plotly_finder.PlotlyJsFinder",
]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

# Behind a TLS-terminating proxy, trust its X-Forwarded-Proto so that secure cookies and redirects work.
if _bool("SECURE_PROXY_SSL_HEADER", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = _bool("SECURE_COOKIES", default=False)
# HTTPS only: redirect plain http to https, and tell browsers to use https for this host from now on (HSTS).
# Set them once the site is served over TLS; `manage.py check --deploy` asks for all of them (README "Production").
SECURE_SSL_REDIRECT = _bool("SECURE_SSL_REDIRECT", default=False)
SECURE_HSTS_SECONDS = _int("SECURE_HSTS_SECONDS", default=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = _bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_HSTS_PRELOAD = _bool("SECURE_HSTS_PRELOAD", default=False)
if SECURE_HSTS_SECONDS < 0:
    raise ImproperlyConfigured(f"SECURE_HSTS_SECONDS must be 0 or more, got {SECURE_HSTS_SECONDS}")
# Pages load scripts, styles, images and fonts from this server only (connectors_admin/csp.py); empty: no header.
CONTENT_SECURITY_POLICY = env.str(
    "CONTENT_SECURITY_POLICY",
    default="default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'",
)


def _networks(name: str) -> list:
    import ipaddress

    networks = []
    for item in env.list(name, default=[]):
        try:
            networks.append(ipaddress.ip_network(item.strip(), strict=False))
        except ValueError:
            raise ImproperlyConfigured(f"{name}: {item!r} is not an IP address or network") from None
    return networks


# Reverse proxies whose X-Forwarded-For is believed for a client's address (connectors/client_address.py): the
# audit trail records it and the login throttles count it. Empty: the address of the connecting peer.
TRUSTED_PROXIES = _networks("TRUSTED_PROXIES")

# Single sign-on with OpenID Connect (connectors/accounts/sso.py, README "Single sign-on"). Off unless the issuer
# and client id are set.
OIDC_ISSUER_URL = env.str("OIDC_ISSUER_URL", default="").strip().rstrip("/")
OIDC_CLIENT_ID = env.str("OIDC_CLIENT_ID", default="").strip()
OIDC_CLIENT_SECRET = env.str("OIDC_CLIENT_SECRET", default="")
OIDC_SCOPES = env.str("OIDC_SCOPES", default="openid email profile").strip()
OIDC_PROVIDER_NAME = env.str("OIDC_PROVIDER_NAME", default="single sign-on").strip()
OIDC_GROUPS_CLAIM = env.str("OIDC_GROUPS_CLAIM", default="groups").strip()
OIDC_USERNAME_CLAIM = env.str("OIDC_USERNAME_CLAIM", default="preferred_username").strip()


def _group_map(name: str) -> dict[str, str]:
    mapping = {}
    for item in env.str(name, default="").split(";"):
        if not item.strip():
            continue
        idp_group, sep, local = item.partition("=")
        if not sep or not idp_group.strip() or not local.strip():
            raise ImproperlyConfigured(f"{name}: expected 'idp-group=Local group;...', got {item.strip()!r}")
        mapping[idp_group.strip()] = local.strip()
    return mapping


OIDC_GROUP_MAP = _group_map("OIDC_GROUP_MAP")
if OIDC_ISSUER_URL and not OIDC_ISSUER_URL.startswith(("https://", "http://")):
    raise ImproperlyConfigured("OIDC_ISSUER_URL must be an http(s) URL")
if bool(OIDC_ISSUER_URL) != bool(OIDC_CLIENT_ID):
    raise ImproperlyConfigured("OIDC_ISSUER_URL and OIDC_CLIENT_ID must be set together (or neither)")
if OIDC_ISSUER_URL and "openid" not in OIDC_SCOPES.split():
    raise ImproperlyConfigured("OIDC_SCOPES must include openid")
# Password sign-in (login page and HTTP Basic) only for superusers: everyone else signs in through the identity
# provider (or uses API keys).
LOCAL_LOGIN_SUPERUSERS_ONLY = _bool("LOCAL_LOGIN_SUPERUSERS_ONLY", default=False)
# A session opened by an SSO sign-in ends this long after the sign-in, however active it is, so that the roles
# and the account are checked at the provider again (Django's two-week SESSION_COOKIE_AGE stays for local logins).
SSO_SESSION_MAX_AGE_SECONDS = _positive_int("SSO_SESSION_MAX_AGE_SECONDS", default=8 * 3600)
# SCIM 2.0 provisioning (connectors/accounts/scim/, README "SCIM provisioning"): the identity provider's bearer
# token. Empty: /scim/v2/ answers 404.
SCIM_BEARER_TOKEN = env.str("SCIM_BEARER_TOKEN", default="").strip()
if SCIM_BEARER_TOKEN and len(SCIM_BEARER_TOKEN) < 32:
    raise ImproperlyConfigured("SCIM_BEARER_TOKEN must be at least 32 characters (for example: openssl rand -hex 32)")

# Outbound connections per transport profile and process: enough for thousands of slow executions in flight at
# once. Idle connections are kept for reuse for 30 s (connectors/outbound/transport.py).
OUTBOUND_MAX_CONNECTIONS = _int("OUTBOUND_MAX_CONNECTIONS", default=2000)

# Limits on a relayed stream (connectors/outbound/stream_bounds.py, README "Limits on streams"); responseTimeout
# (ACTIONS_CONFIG) is the fourth, the longest wait for any byte. The defaults let long answers through: OpenAI's SSE
# framing costs about 150-200 bytes per token (Azure's content-filter annotations more), so 64 MiB is some 300k
# tokens; an hour is 64k tokens at under 20 tokens/s; one event is one token, or a whole answer from servers that
# send it at once.
STREAM_MAX_BYTES = _byte_size("STREAM_MAX_BYTES", default=64 * 1024 * 1024)
STREAM_MAX_SECONDS = _positive_int("STREAM_MAX_SECONDS", default=3600)
STREAM_MAX_EVENT_BYTES = _byte_size("STREAM_MAX_EVENT_BYTES", default=1024 * 1024)

# Execution events are committed in batches by one writer thread per server process (usage/recording/writer.py). By
# default an execution is answered after its event's commit; with write-behind it is answered at once, which is
# faster, and a crash of the process (not a normal shutdown, which writes the queue) loses the events not yet
# committed: normally those of the last few milliseconds, more while the database is unreachable.
EVENT_WRITE_BEHIND = _bool("EVENT_WRITE_BEHIND", default=False)
# On PostgreSQL, the server's event loop writes the execution events itself, the writer thread taking over any
# batch that fails (usage/recording/loop_writer.py); off, the thread writes them all, as before.
EVENT_WRITER_ON_LOOP = _bool("EVENT_WRITER_ON_LOOP", default=True)
# Where the event writer keeps the events the database could not take (usage/recording/spool.py), until it can: fsync'd
# JSON lines, replayed at start-up and as soon as the database answers again (README, "Guarantees").
EVENT_SPOOL_DIR = Path(env.str("EVENT_SPOOL_DIR", default="").strip() or BASE_DIR / "var" / "event-spool")

# How long a verified HTTP Basic credential is remembered (see connectors/api/auth.py).
BASIC_AUTH_CACHE_SECONDS = _int("BASIC_AUTH_CACHE_SECONDS", default=300)
# Failed logins and failed HTTP Basic credentials (connectors/throttling): after this many failures within the
# window, from one client address or for one username, further attempts are answered 429 until the window ends.
AUTH_THROTTLE_WINDOW_SECONDS = _int("AUTH_THROTTLE_WINDOW_SECONDS", default=300)
AUTH_THROTTLE_FAILURES_PER_ADDRESS = _int("AUTH_THROTTLE_FAILURES_PER_ADDRESS", default=50)
AUTH_THROTTLE_FAILURES_PER_USERNAME = _int("AUTH_THROTTLE_FAILURES_PER_USERNAME", default=10)
# Basic passwords are checked by this many threads of their own per process (never the thread the execution path
# shares), with at most AUTH_HASHER_QUEUE checks running or waiting; beyond that, a new check is answered 429.
AUTH_HASHER_THREADS = _int("AUTH_HASHER_THREADS", default=2)
AUTH_HASHER_QUEUE = _int("AUTH_HASHER_QUEUE", default=64)
for _name in ("AUTH_THROTTLE_WINDOW_SECONDS", "AUTH_THROTTLE_FAILURES_PER_ADDRESS",
              "AUTH_THROTTLE_FAILURES_PER_USERNAME", "AUTH_HASHER_THREADS", "AUTH_HASHER_QUEUE"):
    if globals()[_name] < 1:
        raise ImproperlyConfigured(f"{_name} must be 1 or more, got {globals()[_name]}")
# How long the execution path trusts a connector it has read (connectors/caching/connector_cache.py); a change
# reaches every process at once on PostgreSQL, this is the backstop.
CONNECTOR_CACHE_SECONDS = _int("CONNECTOR_CACHE_SECONDS", default=60)

# The currency every price is in and every cost is summed in (usage/governance/pricing/prices.py): an ISO 4217 code.
USAGE_CURRENCY = env.str("USAGE_CURRENCY", default="USD").upper()
if not (len(USAGE_CURRENCY) == 3 and USAGE_CURRENCY.isalpha() and USAGE_CURRENCY.isascii()):
    raise ImproperlyConfigured("USAGE_CURRENCY must be a three-letter ISO 4217 currency code, such as USD or EUR")

# Where budgets and rate limits keep their counters (usage/governance/enforcement/counters.py): a Redis URL such as
# redis://127.0.0.1:6379/0, or empty for the database (works on SQLite with no server, and across processes and
# hosts on PostgreSQL).
REDIS_URL = env.str("REDIS_URL", default="").strip()
if REDIS_URL and not REDIS_URL.startswith(("redis://", "rediss://")):
    raise ImproperlyConfigured("REDIS_URL must be a redis:// or rediss:// URL, such as redis://127.0.0.1:6379/0")

# Mail for alerts (usage/governance/alerts.py): EMAIL_URL such as smtp://user:password@mail.example.com:587
# (smtp+tls://, smtp+ssl://, consolemail:// for development). Without it, mail goes to the console.
try:
    vars().update(env.email_url("EMAIL_URL", default="consolemail://"))
except (ImproperlyConfigured, ValueError, KeyError) as exc:
    raise ImproperlyConfigured(f"EMAIL_URL is not a mail URL (smtp://user:password@host:port): {exc}") from None
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="connectors-admin@localhost")

# --- Observability (README: Prometheus, OpenTelemetry, Kibana event-log export) ------------------------------------
# Prometheus metrics are collected unless this is off (then GET /metrics answers 404).
METRICS_ENABLED = _bool("METRICS_ENABLED", default=True)
# GET /metrics is refused to everyone unless a bearer token or client networks are configured (usage/observability).
METRICS_BEARER_TOKEN = env.str("METRICS_BEARER_TOKEN", default="")
try:
    METRICS_ALLOWED_NETWORKS = [ipaddress.ip_network(net.strip(), strict=False)
                                for net in env.list("METRICS_ALLOWED_NETWORKS", default=[]) if net.strip()]
except ValueError as exc:
    raise ImproperlyConfigured(f"METRICS_ALLOWED_NETWORKS: {exc}") from None
# Label cardinality bound: per connector, the first N model names a process sees are labels, later ones `other`.
METRICS_MODELS_PER_CONNECTOR = _int("METRICS_MODELS_PER_CONNECTOR", default=20)


def _metrics_directory() -> str:
    """Where worker processes share their metric values (prometheus-client's multi-process mode), or "".

    An explicit PROMETHEUS_MULTIPROC_DIR wins. Otherwise a worker of a multi-process server gets a directory of
    its supervisor's: uvicorn --workers spawns its workers with multiprocessing, gunicorn forks them and sets
    SERVER_SOFTWARE. A single process (make run, tests, management commands) keeps its values in memory.
    """
    explicit = env.str("PROMETHEUS_MULTIPROC_DIR", default="")
    if explicit:
        return explicit
    if multiprocessing.parent_process() is not None or env.str("SERVER_SOFTWARE", default="").startswith("gunicorn"):
        return str(Path(tempfile.gettempdir()) / f"connectors-admin-metrics-{os.getppid()}")
    return ""


PROMETHEUS_MULTIPROC_DIR = _metrics_directory()
if PROMETHEUS_MULTIPROC_DIR:
    Path(PROMETHEUS_MULTIPROC_DIR).mkdir(parents=True, exist_ok=True)
    # prometheus-client chooses its mode from the environment when it is first imported (after these settings).
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = PROMETHEUS_MULTIPROC_DIR

# OpenTelemetry tracing is on only when an OTLP endpoint is set; the SDK reads the other OTEL_* variables itself
# (OTEL_SERVICE_NAME, OTEL_EXPORTER_OTLP_HEADERS, OTEL_RESOURCE_ATTRIBUTES, ...).
OTEL_EXPORTER_OTLP_ENDPOINT = env.str("OTEL_EXPORTER_OTLP_ENDPOINT", default="")
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT = env.str("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", default="")
OTEL_SERVICE_NAME = env.str("OTEL_SERVICE_NAME", default="connectors-admin")
OTEL_SDK_DISABLED = _bool("OTEL_SDK_DISABLED", default=False)
OTEL_TRACES_EXPORTER = env.str("OTEL_TRACES_EXPORTER", default="otlp").strip().lower()
TRACING_ENABLED = (
    bool(OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)
    and not OTEL_SDK_DISABLED
    and OTEL_TRACES_EXPORTER != "none"
)

# The Kibana event-log export (usage/operations/kibana_event_log.py): the index or data stream named in its _bulk action lines.
KIBANA_EVENT_LOG_INDEX = env.str("KIBANA_EVENT_LOG_INDEX", default=".kibana-event-log-ds")

LOG_LEVEL = env.str("LOG_LEVEL", default="INFO").upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {"httpx": {"level": "WARNING"}, "httpcore": {"level": "WARNING"}},
}
