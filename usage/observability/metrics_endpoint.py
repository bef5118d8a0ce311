"""``GET /metrics``: the Prometheus text format, for a scraper with the bearer token or from an allowed network.

Never public by default: with neither ``METRICS_BEARER_TOKEN`` nor ``METRICS_ALLOWED_NETWORKS`` set, everyone gets
403 (README, Prometheus). The client address is the connection's (``REMOTE_ADDR``); behind a reverse proxy that is
the proxy's, so use the token there, or uvicorn's ``--proxy-headers`` with ``--forwarded-allow-ips``.
"""

import hmac
import ipaddress

from django.conf import settings
from django.http import Http404, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST

from usage.observability import metrics


def _refused(status: int, message: str, challenge: str = "") -> HttpResponse:
    response = HttpResponse(message + "\n", status=status, content_type="text/plain; charset=utf-8")
    if challenge:
        response["WWW-Authenticate"] = challenge
    return response


def _from_allowed_network(request) -> bool:
    if not settings.METRICS_ALLOWED_NETWORKS:
        return False
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    return any(address in network for network in settings.METRICS_ALLOWED_NETWORKS)


def refusal(request) -> HttpResponse | None:
    """Why this request may not read the metrics, as a response; None when it may."""
    token = settings.METRICS_BEARER_TOKEN
    scheme, _, credentials = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    presented = credentials.strip() if scheme.lower() == "bearer" else ""
    if token and presented and hmac.compare_digest(presented.encode(), token.encode()):
        return None
    if _from_allowed_network(request):
        return None
    if token:
        if presented:
            return _refused(401, "The bearer token is not the metrics token.",
                            'Bearer realm="metrics", error="invalid_token"')
        return _refused(401, "GET /metrics needs the metrics bearer token.", 'Bearer realm="metrics"')
    if settings.METRICS_ALLOWED_NETWORKS:
        return _refused(403, "This client's address is not in METRICS_ALLOWED_NETWORKS.")
    return _refused(403, "GET /metrics is closed: set METRICS_BEARER_TOKEN or METRICS_ALLOWED_NETWORKS.")


@require_GET
def metrics_endpoint(request):
    if not settings.METRICS_ENABLED:
        raise Http404("Metrics are off (METRICS_ENABLED).")
    refused = refusal(request)
    if refused is not None:
        return refused
    return HttpResponse(metrics.exposition(), content_type=CONTENT_TYPE_LATEST)
