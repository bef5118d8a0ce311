"""Shaping the upstream request for each provider (docs/KIBANA.md, 'Body shaping per provider').

No database, no network.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from urllib.parse import urlsplit, urlunsplit

from connectors import json_codec
from connectors.actions_config import TLSSettings
from connectors.models import Connector, Provider
from connectors.validation import azure_deployment, decode_pem, is_azure_deployments_url, is_forbidden_header

_TOOL_FIELDS = (("tools", ("tool_choice", "parallel_tool_calls")), ("functions", ("function_call",)))


@dataclass
class UpstreamRequest:
    url: str
    headers: dict[str, str]
    body: bytes
    requested_model: str
    stream: bool
    # The caller's messages, kept to estimate prompt tokens when the provider reports no usage.
    payload: dict = field(repr=False, default_factory=dict)
    # The provider's key, so that transport can mask it in whatever the provider sends back (outbound/masking.py).
    secret: str = field(repr=False, default="")
    # The connector's own TLS (Other provider: verificationMode, PKI), applied to its URL's origin only.
    tls: ConnectorTLS | None = field(repr=False, default=None)

    @property
    def completion_cap(self) -> int | None:
        """The most completion tokens the caller allows (``max_completion_tokens`` or the older ``max_tokens``; the
        larger when both are set), or None when it sets neither as a positive whole number: what a budget reserves
        for the answer (usage/governance/enforcement/admission.py)."""
        caps = [value for value in (self.payload.get("max_completion_tokens"), self.payload.get("max_tokens"))
                if isinstance(value, int) and not isinstance(value, bool) and value > 0]
        return max(caps) if caps else None


@dataclass(frozen=True)
class ConnectorTLS:
    """What an Other connector changes in the TLS towards its provider (docs/KIBANA.md 1.2): the verification mode,
    and with PKI (a mode set, as Kibana requires) the client certificate, its key and an optional CA."""

    verification_mode: str
    client_certificate: str = field(default="", repr=False)
    client_key: str = field(default="", repr=False)
    ca: str = field(default="", repr=False)

    def applied_to(self, tls: TLSSettings) -> TLSSettings:
        changes = {"verification_mode": self.verification_mode}
        if self.client_certificate:
            changes.update(client_certificate=self.client_certificate, client_key=self.client_key)
        if self.ca:
            changes.update(certificate_authorities_files=(), certificate_authorities_data=self.ca)
        return dataclasses.replace(tls, **changes)


def format_pem(text: str) -> str:
    """PEM blocks with their base64 body wrapped at 64 characters, as Kibana's formatPEMContent does, so that PEM
    pasted on one line (the line breaks lost) still loads."""

    def wrap(match: re.Match) -> str:
        body = re.sub(r"\s+", "", match.group(2))
        lines = "\n".join(body[i:i + 64] for i in range(0, len(body), 64))
        return f"-----BEGIN {match.group(1)}-----\n{lines}\n-----END {match.group(1)}-----\n"

    return "".join(wrap(m) for m in re.finditer(r"-----BEGIN ([A-Z ]+)-----(.*?)-----END \1-----", text, re.S))


def connector_tls(connector: Connector) -> ConnectorTLS | None:
    if connector.provider != Provider.OTHER or not connector.verification_mode:
        return None
    if not connector.uses_pki:
        return ConnectorTLS(verification_mode=connector.verification_mode)
    return ConnectorTLS(
        verification_mode=connector.verification_mode,
        client_certificate=format_pem(decode_pem(connector.certificate_data)),
        client_key=format_pem(decode_pem(connector.private_key_data)),
        ca=format_pem(decode_pem(connector.ca_data)) if connector.ca_data else "",
    )


@lru_cache(maxsize=1024)  # a connector's URL, the same every call
def normalise_url(url: str) -> str:
    """Strip a trailing slash and collapse doubled slashes in the path, as Kibana does."""
    parts = urlsplit(url.strip())
    path = re.sub(r"/{2,}", "/", parts.path).rstrip("/")
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))


# Kibana sets ``stream`` on an OpenAI connector's body only for these two URLs (openai_utils.ts).
OPENAI_STREAMING_URLS = ("https://api.openai.com/v1/chat/completions", "https://api.openai.com/v1/completions")


def shape_body(connector: Connector, body: dict, *, stream: bool, as_kibana: bool = True) -> dict:
    """The body sent upstream, as Kibana's per-provider utils shape it (docs/KIBANA.md 4.7):

    - OpenAI: ``model`` defaulted; ``stream`` (and, streaming, ``stream_options.include_usage``) set only for
      api.openai.com's two URLs, so a gateway gets the caller's body as it is; tool fields without tools dropped;
    - Azure: ``stream`` and, streaming, ``stream_options`` set only on a deployments URL; ``model`` defaulted;
    - Other: ``stream`` set and ``model`` defaulted, nothing else.

    One addition, for streams only: a streamed call whose body says nothing about ``stream`` gets ``stream: true``
    where Kibana's rule would leave the body without it (a gateway would then answer JSON to a stream).

    ``as_kibana=False`` is for the OpenAI-compatible endpoint, which has no Kibana counterpart: ``stream`` is always
    what the call is, and streams to OpenAI and Azure always ask for usage, so that every call is counted (the
    endpoint hides the usage event from a caller who did not ask for it, README "OpenAI-compatible endpoint").
    """
    if not as_kibana:
        return _shape_for_sdk_callers(connector, body, stream=stream)
    body = dict(body)
    url = normalise_url(connector.api_url)
    default_model = connector.effective_default_model
    if not body.get("model") and default_model:
        body["model"] = default_model
    if connector.provider == Provider.OPENAI:
        sets_stream = url in OPENAI_STREAMING_URLS
        usage_in_stream = sets_stream
        for list_field, dependants in _TOOL_FIELDS:
            if not isinstance(body.get(list_field), list) or not body[list_field]:
                for dependant in dependants:
                    body.pop(dependant, None)
    elif connector.provider == Provider.AZURE:
        sets_stream = usage_in_stream = is_azure_deployments_url(url)
    else:
        sets_stream, usage_in_stream = True, False
    if sets_stream:
        body["stream"] = stream
    elif stream and "stream" not in body:
        body["stream"] = True
    if stream and usage_in_stream:
        body["stream_options"] = {"include_usage": True}
    return body


def _shape_for_sdk_callers(connector: Connector, body: dict, *, stream: bool) -> dict:
    body = dict(body)
    if not body.get("model") and connector.effective_default_model:
        body["model"] = connector.effective_default_model
    body["stream"] = stream
    if stream and connector.provider in (Provider.OPENAI, Provider.AZURE):
        options = body.get("stream_options") if isinstance(body.get("stream_options"), dict) else {}
        body["stream_options"] = {**options, "include_usage": True}
    elif not stream:
        body.pop("stream_options", None)
    for list_field, dependants in _TOOL_FIELDS:
        if not body.get(list_field):
            body.pop(list_field, None)
            for dependant in dependants:
                body.pop(dependant, None)
    return body


def build_headers(connector: Connector) -> dict[str, str]:
    auth = {}
    api_key = connector.api_key
    if api_key:
        auth = {"api-key": api_key} if connector.provider == Provider.AZURE else {"Authorization": f"Bearer {api_key}"}
    reserved = {name.lower() for name in auth} | {"content-type"}
    headers = {
        name: value
        for name, value in (connector.headers or {}).items()
        # A connector stored before such headers were refused (connectors/validation.py) must not send them either.
        if name.lower() not in reserved and not is_forbidden_header(name)
    }
    if connector.provider == Provider.OPENAI:
        if connector.organization_id:
            headers["OpenAI-Organization"] = connector.organization_id
        if connector.project_id:
            headers["OpenAI-Project"] = connector.project_id
    headers["Content-Type"] = "application/json"
    headers.update(auth)
    return headers


def build_upstream_request(connector: Connector, body: dict, *, stream: bool = False,
                           as_kibana: bool = True) -> UpstreamRequest:
    shaped = shape_body(connector, body, stream=stream, as_kibana=as_kibana)
    return UpstreamRequest(
        url=normalise_url(connector.api_url),
        headers=build_headers(connector),
        body=json_codec.dumps_compact(shaped),
        requested_model=str(shaped.get("model") or _deployment_of(connector) or "")[:255],
        stream=stream,
        payload=shaped,
        secret=connector.api_key,
        tls=connector_tls(connector),
    )


def _deployment_of(connector: Connector) -> str:
    return azure_deployment(connector.api_url) if connector.provider == Provider.AZURE else ""


def default_test_body(connector: Connector) -> str:
    """The body the test tab starts with."""
    body: dict = {"messages": [{"role": "user", "content": "Hello world"}]}
    if connector.provider == Provider.OTHER and connector.default_model:
        body = {"model": connector.default_model, **body}
    return json.dumps(body, indent=2)
