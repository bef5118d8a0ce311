"""A Kibana 9.x connector script, written from Kibana's API documentation ("Connectors" in the Kibana API
reference: POST /api/actions/connector, GET /api/actions/connector/{id}, GET /api/actions/connectors,
PUT /api/actions/connector/{id}, POST /api/actions/connector/{id}/_execute, DELETE /api/actions/connector/{id}).

It knows nothing of connectors-admin: it reads KIBANA_URL, KIBANA_USER, KIBANA_PASSWORD and OPENAI_URL from the
environment, sends Basic auth and kbn-xsrf as the documentation's curl examples do, and exits non-zero with a
message at the first answer that is not what Kibana documents. tests/api/test_kibana_scripts.py runs it unchanged.
"""

import base64
import json
import os
import sys
import urllib.error
import urllib.request

KIBANA = os.environ["KIBANA_URL"].rstrip("/")
AUTH = base64.b64encode(f"{os.environ['KIBANA_USER']}:{os.environ['KIBANA_PASSWORD']}".encode()).decode()


def call(method, path, body=None, expect=200):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(KIBANA + path, data=data, method=method, headers={
        "Authorization": f"Basic {AUTH}", "kbn-xsrf": "true", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    if status != expect:
        sys.exit(f"{method} {path}: expected HTTP {expect}, got {status}: {raw[:500]!r}")
    return json.loads(raw) if raw else None


def check(condition, what):
    if not condition:
        sys.exit(f"unexpected: {what}")


connector = call("POST", "/api/actions/connector", {
    "name": "my-connector",
    "connector_type_id": ".gen-ai",
    "config": {"apiProvider": "OpenAI", "apiUrl": os.environ["OPENAI_URL"]},
    "secrets": {"apiKey": "provider-api-key"},
})
connector_id = connector["id"]
check(connector["connector_type_id"] == ".gen-ai" and connector["is_preconfigured"] is False, connector)

fetched = call("GET", f"/api/actions/connector/{connector_id}")
check(fetched["name"] == "my-connector" and fetched["config"]["apiUrl"] == os.environ["OPENAI_URL"], fetched)

listed = call("GET", "/api/actions/connectors")
check([c["referenced_by_count"] for c in listed if c["id"] == connector_id] == [0], listed)

updated = call("PUT", f"/api/actions/connector/{connector_id}", {
    "name": "my-renamed-connector",
    "config": {"apiProvider": "OpenAI", "apiUrl": os.environ["OPENAI_URL"], "defaultModel": "gpt-4o"},
    "secrets": {"apiKey": "provider-api-key"},
})
check(updated["name"] == "my-renamed-connector" and updated["config"]["defaultModel"] == "gpt-4o", updated)

result = call("POST", f"/api/actions/connector/{connector_id}/_execute", {"params": {
    "subAction": "run",
    "subActionParams": {"body": json.dumps({"messages": [{"role": "user", "content": "Hello world"}]})},
}})
check(result["status"] == "ok" and result["connector_id"] == connector_id, result)
check(result["data"]["choices"][0]["message"]["content"], result)

call("DELETE", f"/api/actions/connector/{connector_id}", expect=204)
call("GET", f"/api/actions/connector/{connector_id}", expect=404)
print("ok")
