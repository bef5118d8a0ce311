"""A Kibana 8.x connector script, written from Kibana 8.x's API documentation for the routes 9.x removed
("Connectors", legacy: POST /api/actions/action, GET /api/actions/action/{id}, GET /api/actions,
PUT /api/actions/action/{id}, POST /api/actions/action/{id}/_execute, DELETE /api/actions/action/{id},
GET /api/actions/list_action_types), with 8.x's camelCase bodies.

It knows nothing of connectors-admin: it reads KIBANA_URL, KIBANA_USER, KIBANA_PASSWORD and OPENAI_URL from the
environment and exits non-zero with a message at the first answer that is not what Kibana 8.x documents.
tests/api/test_kibana_scripts.py runs it unchanged.
"""

import base64
import json
import os
import sys
import urllib.error
import urllib.request

KIBANA = os.environ["KIBANA_URL"].rstrip("/")
AUTH = base64.b64encode(f"{os.environ['KIBANA_USER']}:{os.environ['KIBANA_PASSWORD']}".encode()).decode()
WARNINGS = []


def call(method, path, body=None, expect=200):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(KIBANA + path, data=data, method=method, headers={
        "Authorization": f"Basic {AUTH}", "kbn-xsrf": "true", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, raw, headers = response.status, response.read(), response.headers
    except urllib.error.HTTPError as error:
        status, raw, headers = error.code, error.read(), error.headers
    if status != expect:
        sys.exit(f"{method} {path}: expected HTTP {expect}, got {status}: {raw[:500]!r}")
    WARNINGS.append(headers.get("Warning"))
    return json.loads(raw) if raw else None


def check(condition, what):
    if not condition:
        sys.exit(f"unexpected: {what}")


types = call("GET", "/api/actions/list_action_types")
check(any(t["id"] == ".gen-ai" and t["enabledInConfig"] for t in types), types)

action = call("POST", "/api/actions/action", {
    "name": "my-action",
    "actionTypeId": ".gen-ai",
    "config": {"apiProvider": "OpenAI", "apiUrl": os.environ["OPENAI_URL"]},
    "secrets": {"apiKey": "provider-api-key"},
})
action_id = action["id"]
check(action["actionTypeId"] == ".gen-ai" and action["isPreconfigured"] is False, action)
check(action["isMissingSecrets"] is False, action)

fetched = call("GET", f"/api/actions/action/{action_id}")
check(fetched["name"] == "my-action" and fetched["actionTypeId"] == ".gen-ai", fetched)

listed = call("GET", "/api/actions")
check([a["referencedByCount"] for a in listed if a["id"] == action_id] == [0], listed)

updated = call("PUT", f"/api/actions/action/{action_id}", {
    "name": "my-renamed-action",
    "config": {"apiProvider": "OpenAI", "apiUrl": os.environ["OPENAI_URL"]},
    "secrets": {"apiKey": "provider-api-key"},
})
check(updated["name"] == "my-renamed-action", updated)

result = call("POST", f"/api/actions/action/{action_id}/_execute", {"params": {
    "subAction": "run",
    "subActionParams": {"body": json.dumps({"messages": [{"role": "user", "content": "Hello world"}]})},
}})
check(result["status"] == "ok" and result["actionId"] == action_id, result)
check(result["data"]["choices"][0]["message"]["content"], result)

call("DELETE", f"/api/actions/action/{action_id}", expect=204)
call("GET", f"/api/actions/action/{action_id}", expect=404)
# Every answer of a deprecated route says so (Kibana's RFC 7234 Warning header).
check(all(w and w.startswith("299 Kibana-") for w in WARNINGS), WARNINGS)
print("ok")
