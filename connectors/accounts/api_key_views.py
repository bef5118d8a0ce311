from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from connectors.accounts.api_keys import create_api_key
from connectors.models import ApiKey


@login_required
def api_key_list(request):
    if request.method == "POST":
        name = (request.POST.get("name") or "").strip()[:100]
        if not name:
            messages.error(request, "Give the key a name, for example the application that will use it.")
            return redirect("api_keys")
        record, plaintext = create_api_key(request.user, name)
        # Shown once, on the next page only; the session drops it when the message is read.
        request.session["new_api_key"] = {"id": record.pk, "key": plaintext}
        messages.success(request, f"API key “{name}” created. Copy it now: it will not be shown again.")
        return redirect("api_keys")
    new_key = request.session.pop("new_api_key", None)
    keys = ApiKey.objects.filter(user=request.user)
    return render(request, "connectors/api_keys.html", {"keys": keys, "new_key": new_key})


@login_required
@require_POST
def api_key_revoke(request, key_id: int):
    record = get_object_or_404(ApiKey, pk=key_id, user=request.user)
    if record.revoked_at is None:
        record.revoked_at = timezone.now()
        record.save(update_fields=["revoked_at"])
        messages.success(request, f"API key “{record.name}” revoked.")
    return redirect("api_keys")
