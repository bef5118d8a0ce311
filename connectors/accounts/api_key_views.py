from datetime import UTC, date, datetime, time

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.cache import add_never_cache_headers

from connectors.access.policy import may
from connectors.accounts.api_keys import create_api_key
from connectors.lookup import all_connectors
from connectors.models import ApiKey
from connectors.permissions import VIEW_CONNECTOR
from connectors.spaces.current import current_space_id
from connectors.validation import text_error


@login_required
def api_key_list(request):
    if request.method == "POST":
        name = (request.POST.get("name") or "").strip()[:100]
        if not name:
            messages.error(request, "Give the key a name, for example the application that will use it.")
            return redirect("api_keys")
        if text_error(name):  # PostgreSQL refuses NUL in text; no name needs a control character
            messages.error(request, "The key's name cannot contain control characters (such as NUL or a line break).")
            return redirect("api_keys")
        try:
            expires_at = _expiry(request.POST.get("expires_on") or "")
        except ValueError as exc:
            messages.error(request, str(exc))
            return redirect("api_keys")
        allowed = {str(c.pk) for c in _connectors_to_name(request)}  # this space's: never another space's
        connector_ids = [c for c in request.POST.getlist("connectors") if c in allowed]
        record, plaintext = create_api_key(request.user, name, connector_ids=connector_ids, expires_at=expires_at)
        # Shown once, in the answer to this POST: the plaintext is never stored anywhere, not even in the session
        # until the next page, and the answer must not be cached.
        messages.success(request, f"API key “{name}” created. Copy it now: it will not be shown again.")
        response = _key_list(request, new_key={"id": record.pk, "key": plaintext})
        add_never_cache_headers(response)
        return response
    return _key_list(request)


def _expiry(raw: str):
    """The end of the chosen day (UTC) as the expiry, or None; ValueError with a message for a bad date."""
    if not raw.strip():
        return None
    try:
        day = date.fromisoformat(raw.strip())
    except ValueError:
        raise ValueError("Give the expiry date as YYYY-MM-DD.") from None
    if day < timezone.now().date():
        raise ValueError("The expiry date is in the past.")
    return datetime.combine(day, time.max, tzinfo=UTC)


def _connectors_to_name(request) -> list:
    """The connectors a new key may be limited to: the current space's, for a user who may see them."""
    return all_connectors() if may(request.user, VIEW_CONNECTOR) else []


def _key_list(request, new_key: dict | None = None):
    keys = ApiKey.objects.filter(user=request.user, space_id=current_space_id.get())  # this space's keys
    connectors = _connectors_to_name(request)
    response = render(request, "connectors/api_keys.html",
                      {"keys": keys, "new_key": new_key, "connectors": connectors})
    if new_key:
        response.no_compression = True  # a page showing a secret is never compressed (BREACH): connectors_admin/compression.py
    return response


@login_required
def api_key_revoke(request, key_id: int):
    """GET asks for confirmation (revoking cannot be undone and breaks the applications using the key); POST revokes."""
    record = get_object_or_404(ApiKey, pk=key_id, user=request.user, space_id=current_space_id.get())
    if request.method != "POST":
        return render(request, "connectors/api_key_confirm_revoke.html", {"key": record})
    if record.revoked_at is None:
        record.revoked_at = timezone.now()
        record.save(update_fields=["revoked_at"])
        messages.success(request, f"API key “{record.name}” revoked.")
    return redirect("api_keys")
