"""What a new server process does before it takes its first request, so that its first callers do not pay for it.

A worker that has just started has imported the application but not the URL configuration (Django imports it,
and with it every view, on the first request: about 180 ms here), and has no TLS context for the upstreams (loading
the CA bundle takes tens of milliseconds, on the event loop). Paid on the first request, both hold up every request
that arrives meanwhile: a burst that lands on a new worker waited about 0.3 s longer (docs/PERFORMANCE.md,
"The first burst"). Neither needs the database, so a worker started while the database is away still starts at once.
"""

import gc
import logging
import ssl

from django.conf import settings
from django.urls import Resolver404, get_resolver

from connectors.outbound.transport import ssl_context_for

API_PATH = "/api/"
logger = logging.getLogger(__name__)


def prepare_worker() -> None:
    """Import the URL configuration and build the default TLS context; both are kept for the process's life."""
    try:
        get_resolver().resolve(API_PATH)  # imports the URLconf and every view, compiles the patterns
    except Resolver404:  # pragma: no cover - connectors/api/urls.py answers every /api/ path
        pass
    try:
        ssl_context_for(settings.ACTIONS_CONFIG.ssl)  # the context of every target without TLS settings of its own
    except (ssl.SSLError, OSError, ValueError):  # settings.py checked the files: one removed since fails calls only
        logger.warning("could not build the default TLS context at start-up; the first call will try again",
                       exc_info=True)
    settle_garbage_collector()


# Container objects allocated (net of those freed) before the collector's youngest generation is collected: Python's
# default is 700, which the objects of a few dozen requests in flight pass and fall back from all the time, so it
# collected every 9 requests under load while nearly all of them were freed by reference counting anyway.
YOUNGEST_GENERATION_THRESHOLD = 10_000


def settle_garbage_collector() -> None:
    """Everything loaded so far (Django, the views, the libraries, the settings) lives as long as the process: frozen,
    out of the collector's sight, so that a full collection walks only what requests create (61 ms a full collection
    before, 1.4 ms after, with 32 requests in flight: docs/PERFORMANCE.md, "The garbage collector"). And the
    youngest generation is collected after 10,000 net allocations, not 700. Cyclic garbage is still collected, only
    later, and bounded by the threshold."""
    gc.freeze()
    _young, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNGEST_GENERATION_THRESHOLD, middle, oldest)
