"""Authentication for the JSON APIs: HTTP Basic, ``ApiKey <key>`` / ``Bearer <key>``, or a browser session.

Verifying a Basic password runs Django's password hasher (hundreds of milliseconds by design), so a successful
verification is remembered the way Elasticsearch's realm cache does: under an HMAC of the credentials with a
per-process random salt (the cache never holds a password or anything that could be reversed into one), for
BASIC_AUTH_CACHE_SECONDS. An entry is dropped when the user, their groups or their permissions change: at once in
this process, and on PostgreSQL in every other server process too (connectors/caching/invalidation.py); otherwise
when it expires. API keys are cached the same way, and a revoked key is dropped the same way.

A Basic password that is not in the cache is checked by a small pool of threads of its own (AUTH_HASHER_THREADS,
at most AUTH_HASHER_QUEUE checks running or waiting), never on the single thread that asgiref shares among the
execution path's sync calls: a flood of wrong passwords then slows only other uncached Basic callers, and is
throttled per client address and per username (connectors/throttling/failures.py, README "Throttles").
"""

import asyncio
import base64
import hmac
import logging
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import check_password, make_password
from django.contrib.auth.models import Group
from django.db import InterfaceError, OperationalError
from django.db.models.signals import m2m_changed, post_delete, post_save
from django.middleware.csrf import CsrfViewMiddleware
from django.utils import timezone

from connectors.accounts.api_keys import digest_of, note_api_key_use
from connectors.accounts.backends import password_login_allowed
from connectors.audit import context as audit_context
from connectors.audit import sign_ins
from connectors.caching import invalidation
from connectors.caching.expiring_cache import ExpiringCache
from connectors.caching.single_flight import SingleFlight
from connectors.caller import KeyScope, current_api_key_id, current_key_scope
from connectors.models import ApiKey
from connectors.spaces import grants
from connectors.spaces.models import SpaceRoleGrant
from connectors.throttling import failures
from connectors.throttling.failures import Throttled, client_address

logger = logging.getLogger(__name__)
_SALT = secrets.token_bytes(32)
_LAST_USED_WRITE_INTERVAL = 60  # seconds: how stale an API key's "last used" may be, to spare a write a request


MISSING_CREDENTIALS = "Authentication required: use HTTP Basic, an API key or a session."


class NotAuthenticated(Exception):
    """No credentials, or wrong ones. The message is safe to return to the caller; ``status`` is 401, or 400 for
    credentials that cannot even be looked up."""

    def __init__(self, message: str, status: int = 401):
        super().__init__(message)
        self.status = status


# Kibana's rule (docs/KIBANA.md, 'HTTP routes'): a write authenticated by credentials a browser may send on its own
# (Basic, a session cookie) must carry kbn-xsrf (any value) or kbn-version; API keys are exempt, as in Kibana with
# server.xsrf.allowedSchemes [apikey, bearer].
XSRF_SCHEMES = ("basic", "session")
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
XSRF_MESSAGE = "Request must contain a kbn-xsrf header."


def writes_as_basic_without_json(request) -> bool:
    """For the OpenAI-compatible endpoint: a Basic-authenticated write with neither a JSON content type nor
    kbn-xsrf, which a page on another site can make a browser send (a JSON content type needs a CORS preflight,
    which this server never approves)."""
    if request.method in SAFE_METHODS or getattr(request, "auth_scheme", None) != "basic":
        return False
    return (request.content_type or "").lower() != "application/json" and "HTTP_KBN_XSRF" not in request.META


def lacks_xsrf_header(request) -> bool:
    """Whether this request is a write made with browser-held credentials and without kbn-xsrf / kbn-version."""
    return (
        request.method not in SAFE_METHODS
        and getattr(request, "auth_scheme", None) in XSRF_SCHEMES
        and "HTTP_KBN_XSRF" not in request.META
        and "HTTP_KBN_VERSION" not in request.META
    )


@dataclass
class _Entry:
    user: object
    api_key_id: int | None = None
    key_scope: KeyScope | None = None  # an API key's space and connectors (README "Spaces")
    expires_at: datetime | None = None  # an API key's expiry, checked at each use (no query: it is here)


_cache = ExpiringCache(max_entries=10_000, name="credential")  # HMAC of the credentials -> _Entry
_api_key_last_written: dict[int, float] = {}
# One verification per credential at a time: a burst of calls with credentials not cached yet (a new worker, an
# entry just expired) runs the password hash, or the API key's lookup, once and the others wait for its answer.
_verifications = SingleFlight()


def _cache_key(kind: str, *parts: str) -> bytes:
    return hmac.digest(_SALT, "\0".join((kind, *parts)).encode("utf-8"), "sha256")  # one call into OpenSSL


def _remember(key: bytes, user, api_key_id: int | None = None, key_scope: KeyScope | None = None,
              expires_at: datetime | None = None) -> _Entry:
    entry = _Entry(user=user, api_key_id=api_key_id, key_scope=key_scope, expires_at=expires_at)
    _cache.put(key, entry, settings.BASIC_AUTH_CACHE_SECONDS)
    return entry


def forget_all() -> None:
    _cache.clear()
    _api_key_last_written.clear()


def _with_permissions(user):
    user.get_all_permissions()  # fills the user's permission cache so has_perm needs no query later
    grants.space_permissions(user)  # and the roles held per space, so the policy needs none either
    return user


_hasher_pool: ThreadPoolExecutor | None = None
_hasher_lock = threading.Lock()
_hashes_in_flight = 0


def _hasher() -> ThreadPoolExecutor:
    global _hasher_pool
    with _hasher_lock:
        if _hasher_pool is None:
            _hasher_pool = ThreadPoolExecutor(settings.AUTH_HASHER_THREADS, thread_name_prefix="password-hasher")
        return _hasher_pool


def _password_matches(password: str, encoded: str | None) -> bool:
    """Runs in the hasher pool: no database, only the deliberately slow hash."""
    if encoded is None:
        make_password(password)  # an unknown user costs as much as a known one, as in Django's ModelBackend
        return False
    return check_password(password, encoded)


async def _check_password_off_thread(password: str, encoded: str | None) -> bool:
    global _hashes_in_flight
    with _hasher_lock:
        if _hashes_in_flight >= settings.AUTH_HASHER_QUEUE:
            raise Throttled("Too many password checks in progress. Try again in a second.", 1)
        _hashes_in_flight += 1
    try:
        return await asyncio.wrap_future(_hasher().submit(_password_matches, password, encoded))
    finally:
        with _hasher_lock:
            _hashes_in_flight -= 1


def _user_to_check(address: str, username: str):
    """Count the attempt (Throttled when over a limit), then find the user; None when there is none."""
    failures.count_attempt(address, username)
    try:
        return User._default_manager.get_by_natural_key(username)
    except User.DoesNotExist:
        return None


def _accept(address: str, user):
    failures.succeeded(address, user.get_username())
    sign_ins.api_credential_checked("basic", user.get_username(), user)  # once per verification, not per call
    return _with_permissions(user)


async def _verify_basic(username: str, password: str, address: str):
    """The user, or None for wrong credentials. Like Django's ModelBackend, with the hash off the shared thread:
    the quick database work goes to asgiref's thread, the hash to the hasher pool."""
    user = await sync_to_async(_user_to_check)(address, username)
    matches = await _check_password_off_thread(password, user.password if user is not None else None)
    if matches and user.is_active and password_login_allowed(user):
        return await sync_to_async(_accept)(address, user)
    failures.failed(address, username)
    await sign_ins.afailed(username, "basic")  # in memory unless a record is due (connectors/audit/sign_ins.py)
    return None


def _verify_api_key(key: str):
    """The key's record with its user's permissions loaded, or None."""
    record = ApiKey.objects.active().select_related("user").filter(digest=digest_of(key)).first()
    if record is None or not record.user.is_active:
        sign_ins.api_credential_checked("api_key", key[:12], None)
        return None
    sign_ins.api_credential_checked("api_key", record.user.get_username(), record.user, api_key_id=record.pk)
    _with_permissions(record.user)
    return record


EXPIRED_KEY_MESSAGE = "The API key has expired. Create a new one on the API keys page."


def _refuse_if_expired(expires_at: datetime | None) -> None:
    if expires_at is not None and expires_at <= timezone.now():
        raise NotAuthenticated(EXPIRED_KEY_MESSAGE)


def _touch_api_key(api_key_id: int) -> None:
    note_api_key_use(api_key_id)  # also records the key's first use in the audit trail


async def _note_api_key_use(api_key_id: int) -> None:
    now = time.monotonic()
    if now - _api_key_last_written.get(api_key_id, -1e9) < _LAST_USED_WRITE_INTERVAL:
        return
    _api_key_last_written[api_key_id] = now
    try:
        await sync_to_async(_touch_api_key)(api_key_id)
    except (OperationalError, InterfaceError) as exc:
        # A cached key keeps working while the database is away (README "Guarantees"); "last used" is a hint.
        _api_key_last_written.pop(api_key_id, None)
        logger.warning("could not note the use of API key %s, the database is unavailable: %s", api_key_id, exc)


async def authenticate_basic(username: str, password: str, address_of: Callable[[], str] = lambda: "unknown"):
    """``address_of`` gives the client's address for the failed-login throttle; it is asked only when the
    credentials are verified: a cached call needs none, and working it out (TRUSTED_PROXIES, X-Forwarded-For, two
    address parses) was 2 % of such a call's instructions (bench.instructions)."""
    key = _cache_key("basic", username, password)
    entry = _cache.get(key)
    if entry is None:

        async def verify() -> _Entry | None:
            user = await _verify_basic(username, password, address_of())
            return None if user is None else _remember(key, user)

        entry = await _verifications.run(key, verify)
    if entry is None:
        raise NotAuthenticated("Invalid username or password.")
    return entry.user


async def authenticate_api_key(key: str):
    cache_key = _cache_key("apikey", key)
    entry = _cache.get(cache_key)
    if entry is None:

        async def verify() -> _Entry | None:
            record = await sync_to_async(_verify_api_key)(key)
            if record is None:
                return None
            key_scope = KeyScope(record.space_id, frozenset(str(c) for c in record.connector_ids or ()))
            return _remember(cache_key, record.user, record.pk, key_scope, record.expires_at)

        entry = await _verifications.run(cache_key, verify)
        if entry is None:
            raise NotAuthenticated("Invalid or revoked API key.")
    _refuse_if_expired(entry.expires_at)
    current_api_key_id.set(entry.api_key_id)
    current_key_scope.set(entry.key_scope)
    audit_context.note_api_key(entry.api_key_id)  # changes made by this request are the key's
    await _note_api_key_use(entry.api_key_id)
    return entry.user


def _csrf_failure(request) -> str | None:
    def get_response(_request):  # pragma: no cover - never called by process_view
        return None

    check = CsrfViewMiddleware(get_response)
    check.process_request(request)
    response = check.process_view(request, None, (), {})
    return None if response is None else "CSRF verification failed: send the X-CSRFToken header."


async def authenticate_request(request, *, allow_session: bool = True):
    """The user making an API request, with permissions preloaded; ``request.auth_scheme`` says how it
    authenticated (basic, apikey, bearer or session). Raises NotAuthenticated or Throttled."""
    current_api_key_id.set(None)
    current_key_scope.set(None)
    audit_context.enter_api(request)  # the audit trail's "how" and "from where" for this request
    # META rather than request.headers, whose mapping of every header is built on first use (7 µs a call); both hold
    # the same values (Django drops a header whose name has an underscore before either is built).
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, credentials = header.partition(" ")
    scheme = scheme.lower()
    credentials = credentials.strip()
    request.auth_scheme = scheme if scheme in ("basic", "apikey", "bearer") else "session"
    if scheme == "basic":
        try:
            decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            raise NotAuthenticated("Malformed Basic credentials.") from None
        username, sep, password = decoded.partition(":")
        if not sep:
            raise NotAuthenticated("Malformed Basic credentials.")
        if "\0" in username:  # no user has one, and PostgreSQL refuses NUL in a query
            raise NotAuthenticated("Malformed Basic credentials: the username contains a NUL character.", 400)
        return await authenticate_basic(username, password, lambda: client_address(request))
    if scheme in ("apikey", "bearer"):
        if not credentials:
            raise NotAuthenticated("Missing API key.")
        return await authenticate_api_key(credentials)
    if header:
        raise NotAuthenticated("Unsupported authorization scheme; use Basic, ApiKey or Bearer.")
    if allow_session:
        user = await request.auser()
        if user.is_authenticated:
            if request.method not in ("GET", "HEAD", "OPTIONS"):
                problem = _csrf_failure(request)
                if problem:
                    raise NotAuthenticated(problem)
            return await sync_to_async(_with_permissions)(user)
    raise NotAuthenticated(MISSING_CREDENTIALS)


def _forget_api_key(api_key_id: str) -> None:
    _cache.drop_where(lambda entry: str(entry.api_key_id) == api_key_id)


def _forget_user(user_id: str) -> None:
    _cache.drop_where(lambda entry: str(entry.user.pk) == user_id)


# Changes reach every server process (connectors/caching/invalidation.py), not only the one that made them.
invalidation.register("user", _forget_user, forget_all)
invalidation.register("permissions", lambda _key: forget_all(), forget_all)
invalidation.register("apikey", _forget_api_key, forget_all)


def _on_user_changed(sender, instance, **kwargs):
    invalidation.announce("user", str(instance.pk), using=kwargs.get("using"))


def _on_permissions_changed(sender, action, **kwargs):
    if action.startswith("post_"):
        invalidation.announce("permissions", using=kwargs.get("using"))


def _on_api_key_changed(sender, instance, **kwargs):
    invalidation.announce("apikey", str(instance.pk), using=kwargs.get("using"))


User = get_user_model()
post_save.connect(_on_user_changed, sender=User, dispatch_uid="auth_cache_user_saved")
post_delete.connect(_on_user_changed, sender=User, dispatch_uid="auth_cache_user_deleted")
post_save.connect(_on_api_key_changed, sender=ApiKey, dispatch_uid="auth_cache_key_saved")
post_delete.connect(_on_api_key_changed, sender=ApiKey, dispatch_uid="auth_cache_key_deleted")
m2m_changed.connect(_on_permissions_changed, sender=User.groups.through, dispatch_uid="auth_cache_groups")
m2m_changed.connect(_on_permissions_changed, sender=User.user_permissions.through, dispatch_uid="auth_cache_perms")
m2m_changed.connect(_on_permissions_changed, sender=Group.permissions.through, dispatch_uid="auth_cache_group_perms")


def _on_grant_changed(sender, **kwargs):
    invalidation.announce("permissions", using=kwargs.get("using"))


post_save.connect(_on_grant_changed, sender=SpaceRoleGrant, dispatch_uid="auth_cache_grant_saved")
post_delete.connect(_on_grant_changed, sender=SpaceRoleGrant, dispatch_uid="auth_cache_grant_deleted")
