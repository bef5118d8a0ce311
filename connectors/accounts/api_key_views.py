from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.cache import add_never_cache_headers

from connectors.accounts.api_keys import create_api_key
from connectors.models import ApiKey
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
        record, plaintext = create_api_key(request.user, name)
        # Shown once, in the answer to this POST: the plaintext is never stored anywhere, not even in the session
        # until the next page, and the answer must not be cached.
        messages.success(request, f"API key “{name}” created. Copy it now: it will not be shown again.")
        response = _key_list(request, new_key={"id": record.pk, "key": plaintext})
        add_never_cache_headers(response)
        return response
    return _key_list(request)


def _key_list(request, new_key: dict | None = None):
    keys = ApiKey.objects.filter(user=request.user)
    response = render(request, "connectors/api_keys.html", {"keys": keys, "new_key": new_key})
    if new_key:
        response.no_compression = True  # a page showing a secret is never compressed (BREACH): connectors_admin/compression.py
    return response


@login_required
def api_key_revoke(request, key_id: int):
    """GET asks for confirmation (revoking cannot be undone and breaks the applications using the key); POST revokes."""
    record = get_object_or_404(ApiKey, pk=key_id, user=request.user)
    if request.method != "POST":
        return render(request, "connectors/api_key_confirm_revoke.html", {"key": record})
    if record.revoked_at is None:
        record.revoked_at = timezone.now()
        record.save(update_fields=["revoked_at"])
        messages.success(request, f"API key “{record.name}” revoked.")
    return redirect("api_keys")
