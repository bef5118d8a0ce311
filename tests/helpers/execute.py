"""Kibana's ``_execute`` call as the tests make it: the request body, and the call through Django's test client or
over real sockets to the app under uvicorn (tests/servers/asgi_server.py), with the headers Kibana's clients send."""

from __future__ import annotations

import asyncio
import json

import httpx

from bench.loadgen import Connection
from tests.conftest import basic_auth

HELLO = {"messages": [{"role": "user", "content": "Hello world"}]}


def execute_path(connector) -> str:
    return f"/api/actions/connector/{connector.pk}/_execute"


def execute_body(sub_action: str, **sub_params) -> dict:
    """The ``_execute`` request body: ``{"params": {"subAction": ..., "subActionParams": {...}}}``."""
    return {"params": {"subAction": sub_action, "subActionParams": sub_params}}


def run_body(body: dict = HELLO, sub_action: str = "run", **sub_params) -> dict:
    """The body of a run (or test, stream): the provider's request body as the JSON string Kibana sends."""
    return execute_body(sub_action, body=json.dumps(body), **sub_params)


def run_bytes(content: str) -> bytes:
    """The raw bytes of a run whose one user message is ``content``."""
    return json.dumps(run_body({"messages": [{"role": "user", "content": content}]})).encode()


def _as_text(body) -> str | bytes:
    """A dict is sent as JSON; text or bytes (malformed on purpose, say) as they are."""
    return body if isinstance(body, (str, bytes)) else json.dumps(body)


def execute_with_client(client, connector, body=None, *, user=None, **extra):
    """POST ``body`` (``run_body()`` if None) through Django's test client, with kbn-xsrf and, for ``user``, Basic
    credentials; ``extra`` as for ``client.post`` (headers as ``HTTP_...``)."""
    if user is not None:
        extra.setdefault("HTTP_AUTHORIZATION", basic_auth(user))
    return client.post(execute_path(connector), _as_text(run_body() if body is None else body),
                       content_type="application/json", HTTP_KBN_XSRF="true", **extra)


def execute_over_http(server, connector, body=None, *, user=None, headers=None, timeout=30) -> httpx.Response:
    """POST ``body`` (``run_body()`` if None) to the live ``server`` with httpx, with kbn-xsrf and, for ``user``,
    Basic credentials; ``headers`` are added last (so they may replace those)."""
    sent = {"Content-Type": "application/json", "kbn-xsrf": "true"}
    if user is not None:
        sent["Authorization"] = basic_auth(user)
    return httpx.post(f"{server.url}{execute_path(connector)}", content=_as_text(run_body() if body is None else body),
                      headers={**sent, **(headers or {})}, timeout=timeout)


def envelope(response) -> dict:
    """Kibana's envelope of an answered call: ``_execute`` answers 200 whatever the outcome, which is in ``status``."""
    assert response.status_code == 200, response.content
    return response.json()


async def post_at_once(port: int, path: str, bodies: list[bytes], headers: dict):
    """POST every body at the same time, each on a connection of its own (bench/loadgen.py's raw HTTP/1.1 client)."""
    async def one(body: bytes):
        connection = Connection("127.0.0.1", port)
        try:
            return await connection.request("POST", path, body, headers)
        finally:
            await connection.close()

    return await asyncio.gather(*(one(body) for body in bodies))
