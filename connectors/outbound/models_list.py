"""What ``GET /api/openai/<id>/v1/models`` lists: the models the connector's provider offers, cached briefly.

- OpenAI and Other: the provider's own ``GET .../models``, next to the chat completions URL
  (``https://api.openai.com/v1/chat/completions`` -> ``https://api.openai.com/v1/models``), sent with the
  connector's key and headers through the same transport as executions (allowedHosts, proxy, TLS settings).
- Azure OpenAI: the deployment of a deployments URL, or the default model of a v1 URL (a deployment name):
  an Azure key answers chat completions for its deployment, not a listing of the resource.

The answer is kept ``CACHE_SECONDS`` per connector (and per URL and last change, so an edit is seen at once).
When the provider cannot be asked (unreachable, an error status, an answer that is not a model list), the list
is the connector's default model alone, kept ``FALLBACK_CACHE_SECONDS`` so that a provider that is back is soon
asked again. README, "OpenAI-compatible endpoint".
"""

import asyncio
import logging
import re
from urllib.parse import urlsplit, urlunsplit

from connectors.caching.expiring_cache import ExpiringCache
from connectors.models import Connector, Provider
from connectors.outbound import transport
from connectors.outbound.masking import loads_provider_json
from connectors.outbound.providers import UpstreamRequest, build_headers, normalise_url
from connectors.validation import azure_deployment

logger = logging.getLogger(__name__)

CACHE_SECONDS = 60
FALLBACK_CACHE_SECONDS = 10
# Listing models is a side request: it never waits as long as an execution may.
ASK_TIMEOUT_SECONDS = 10
MAX_MODELS = 1000
_CHAT_PATH = re.compile(r"/chat/completions$")

_cache = ExpiringCache(max_entries=1000)


def models_url(connector: Connector) -> str | None:
    """The provider's model listing next to the connector's chat completions URL; None when there is none."""
    if connector.provider == Provider.AZURE:
        return None
    parts = urlsplit(normalise_url(connector.api_url))
    if not _CHAT_PATH.search(parts.path):
        return None
    return urlunsplit((parts.scheme, parts.netloc, _CHAT_PATH.sub("/models", parts.path), parts.query, ""))


def _model(model_id: str, created: int, owner: str) -> dict:
    return {"id": model_id, "object": "model", "created": created, "owned_by": owner}


def fallback_models(connector: Connector) -> list[dict]:
    """The connector's own model: its default model, or its Azure deployment."""
    model = connector.effective_default_model or azure_deployment(connector.api_url)
    created = int(connector.created_at.timestamp()) if getattr(connector, "created_at", None) else 0
    owner = {Provider.OPENAI: "openai", Provider.AZURE: "azure"}.get(connector.provider, "system")
    return [_model(model, created, owner)] if model else []


def _parse_listing(body: bytes) -> list[dict] | None:
    try:
        listing = loads_provider_json(body)
    except (ValueError, UnicodeDecodeError):
        return None
    data = listing.get("data") if isinstance(listing, dict) else None
    if not isinstance(data, list):
        return None
    models = []
    for item in data[:MAX_MODELS]:
        if isinstance(item, dict) and isinstance(item.get("id"), str) and item["id"]:
            created = item.get("created") if isinstance(item.get("created"), int) else 0
            owner = item.get("owned_by") if isinstance(item.get("owned_by"), str) else "system"
            models.append(_model(item["id"], created, owner))
    return models


async def _ask_provider(connector: Connector, url: str) -> list[dict] | None:
    request = UpstreamRequest(url=url, headers=build_headers(connector), body=b"", requested_model="", stream=False)
    try:
        async with asyncio.timeout(ASK_TIMEOUT_SECONDS):
            response = await transport.send(request, method="GET")
    except (transport.OutboundError, TimeoutError) as exc:
        logger.info("listing the models of connector %s failed: %s", connector.pk, exc)
        return None
    if response.status >= 400:
        logger.info("listing the models of connector %s failed: status %s", connector.pk, response.status)
        return None
    return _parse_listing(response.body)


async def available_models(connector: Connector) -> list[dict]:
    """The models to list for ``connector`` (see the module's docstring)."""
    key = (connector.pk, connector.api_url, str(getattr(connector, "updated_at", "")))
    cached = _cache.get(key)
    if cached is not None:
        return cached
    url = models_url(connector)
    models = await _ask_provider(connector, url) if url else None
    if models:
        _cache.put(key, models, CACHE_SECONDS)
        return models
    models = fallback_models(connector)
    _cache.put(key, models, FALLBACK_CACHE_SECONDS if url else CACHE_SECONDS)
    return models


def forget_models() -> None:
    """Drop every cached listing (tests)."""
    _cache.clear()
