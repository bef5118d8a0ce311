"""``GET /healthz``: whether this server process can record executions, for operators and load balancers.

No authentication and no secrets: counts and states only. ``status`` is ``ok``; ``degraded`` while the database
cannot be reached (events go to the spool and are replayed later, README "Guarantees") or spooled files wait to be
replayed; ``failing`` (HTTP 503) when the event writer of a server process is not running.
"""

from django.http import JsonResponse
from django.views.decorators.http import require_GET

from usage.recording.writer import writer_health


def health_status(writer: dict) -> str:
    if writer.get("started") and not writer.get("running"):
        return "failing"
    if writer.get("started") and (not writer["database_reachable"] or writer["spool_files"]):
        return "degraded"
    return "ok"


@require_GET
def healthz(request):
    writer = writer_health()
    status = health_status(writer)
    return JsonResponse({"status": status, "event_writer": writer}, status=503 if status == "failing" else 200)
