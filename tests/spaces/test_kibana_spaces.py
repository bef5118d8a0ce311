"""Kibana's spaces behaviour for connectors, over real sockets to the app under uvicorn (the API's short path):
the spaces API with Kibana's bodies and messages (x-pack spaces plugin, routes/api/external/*.ts and
lib/space_schema.ts), connectors created, read, listed and run under ``/s/<space>/``, another space's connector
answered as missing, a custom id taken in another space, and copy to space without secrets (docs/KIBANA.md,
'Spaces')."""

from __future__ import annotations

import httpx
import pytest

from connectors.models import Connector
from tests.conftest import basic_auth
from tests.helpers.execute import execute_body
from tests.servers.kibana_simulator import OpenAISimulator

pytest_plugins = ["tests.servers.asgi_server"]

HELLO_BODY = '{"model":"gpt-3.5-turbo","messages":[{"role":"user","content":"Hello world"}]}'


@pytest.fixture
def kibana(asgi_live_server, admin_user, actions_config):
    actions_config({"allowedHosts": ["127.0.0.1"]})
    headers = {"Authorization": basic_auth(admin_user), "kbn-xsrf": "foo"}
    with httpx.Client(base_url=asgi_live_server.url, headers=headers, timeout=30) as client:
        yield client


class Upstream:
    def __init__(self, simulator: OpenAISimulator):
        self.url = simulator.start()


@pytest.fixture
def simulator():
    sim = OpenAISimulator()
    yield Upstream(sim)
    sim.close()


def create_space(kibana, space_id: str, name: str | None = None) -> dict:
    response = kibana.post("/api/spaces/space", json={"id": space_id, "name": name or space_id.title()})
    assert response.status_code == 200, response.text
    return response.json()


def create_connector(kibana, prefix: str, api_url: str, connector_id: str = "") -> httpx.Response:
    path = f"{prefix}/api/actions/connector" + (f"/{connector_id}" if connector_id else "")
    return kibana.post(path, json={"name": "A genAi action", "connector_type_id": ".gen-ai",
                                   "config": {"apiProvider": "OpenAI", "apiUrl": api_url},
                                   "secrets": {"apiKey": "genAiApiKey"}})


def test_the_spaces_api_creates_reads_lists_updates_and_deletes_a_space(kibana):
    created = kibana.post("/api/spaces/space", json={"id": "marketing", "name": "Marketing", "description": "Ads",
                                                      "color": "#AABBCC", "initials": "MK", "disabledFeatures": []})
    assert created.status_code == 200
    assert created.json() == {"id": "marketing", "name": "Marketing", "description": "Ads", "color": "#AABBCC",
                              "initials": "MK", "disabledFeatures": []}
    assert kibana.get("/api/spaces/space/marketing").json()["name"] == "Marketing"
    listed = kibana.get("/api/spaces/space").json()
    assert [space["id"] for space in listed] == ["default", "marketing"]
    assert listed[0]["_reserved"] is True
    updated = kibana.put("/api/spaces/space/marketing", json={"id": "marketing", "name": "Growth"})
    assert updated.status_code == 200 and updated.json() == {"id": "marketing", "name": "Growth", "disabledFeatures": []}
    assert kibana.delete("/api/spaces/space/marketing").status_code == 204
    missing = kibana.get("/api/spaces/space/marketing")
    assert missing.status_code == 404
    assert missing.json() == {"statusCode": 404, "error": "Not Found", "message": "Not Found"}


@pytest.mark.parametrize(("body", "message"), [
    ({"id": "Bad Id", "name": "x"}, "[request body.id]: must be lower case, a-z, 0-9, '_', and '-' are allowed"),
    ({"id": "ok"}, "[request body.name]: expected value of type [string] but got [undefined]"),
    ({"id": "ok", "name": ""}, "[request body.name]: value has length [0] but it must have a minimum length of [1]."),
    ({"id": "ok", "name": "x", "color": "red"}, "[request body.color]: must be a 6 digit hex color, starting with a #"),
    ({"id": "ok", "name": "x", "initials": "ABC"},
     "[request body.initials]: value has length [3] but it must have a maximum length of [2]."),
    ({"id": "ok", "name": "x", "bogus": 1}, "[request body.bogus]: definition for this key is missing"),
])
def test_a_bad_space_body_gets_kibanas_message(kibana, body, message):
    response = kibana.post("/api/spaces/space", json=body)
    assert response.status_code == 400
    assert response.json() == {"statusCode": 400, "error": "Bad Request", "message": message}


def test_a_space_id_is_taken_once_and_the_default_space_stays(kibana):
    create_space(kibana, "ops")
    again = kibana.post("/api/spaces/space", json={"id": "ops", "name": "Again"})
    assert again.status_code == 409
    assert again.json()["message"] == "A space with the identifier ops already exists."
    reserved = kibana.delete("/api/spaces/space/default")
    assert reserved.status_code == 400
    assert reserved.json()["message"] == "The default space cannot be deleted because it is reserved."


def test_only_superusers_manage_spaces(asgi_live_server, connector_admin):
    headers = {"Authorization": basic_auth(connector_admin), "kbn-xsrf": "foo"}
    response = httpx.post(f"{asgi_live_server.url}/api/spaces/space", json={"id": "x", "name": "X"}, headers=headers)
    assert response.status_code == 403
    assert response.json()["message"] == "Unauthorized to create spaces"


def test_connectors_are_created_read_listed_and_run_inside_a_space(kibana, simulator):
    create_space(kibana, "space1")
    created = create_connector(kibana, "/s/space1", simulator.url)
    assert created.status_code == 200, created.text
    connector_id = created.json()["id"]
    assert Connector.objects.get(pk=connector_id).space_id == "space1"
    assert kibana.get(f"/s/space1/api/actions/connector/{connector_id}").json()["id"] == connector_id
    assert [c["id"] for c in kibana.get("/s/space1/api/actions/connectors").json()] == [connector_id]
    assert kibana.get("/api/actions/connectors").json() == []
    run = kibana.post(f"/s/space1/api/actions/connector/{connector_id}/_execute",
                      json=execute_body("run", body=HELLO_BODY))
    assert run.status_code == 200 and run.json()["status"] == "ok", run.text


def test_a_connector_of_another_space_is_answered_as_missing(kibana, simulator):
    create_space(kibana, "space1")
    connector_id = create_connector(kibana, "/s/space1", simulator.url).json()["id"]
    not_found = {"statusCode": 404, "error": "Not Found", "message": f"Saved object [action/{connector_id}] not found"}
    for method, path, body in [
        ("GET", f"/api/actions/connector/{connector_id}", None),
        ("PUT", f"/api/actions/connector/{connector_id}", {"name": "x", "config": {"apiProvider": "OpenAI",
                                                                                    "apiUrl": simulator.url}}),
        ("DELETE", f"/api/actions/connector/{connector_id}", None),
        ("POST", f"/api/actions/connector/{connector_id}/_execute", execute_body("run", body=HELLO_BODY)),
    ]:
        response = kibana.request(method, path, json=body)
        assert (response.status_code, response.json()) == (404, not_found), (method, path)
    assert Connector.objects.filter(pk=connector_id, space_id="space1").exists()


def test_a_custom_id_taken_in_another_space_is_a_conflict(kibana, simulator):
    create_space(kibana, "space1")
    assert create_connector(kibana, "/s/space1", simulator.url, "custom-id").status_code == 200
    response = create_connector(kibana, "", simulator.url, "custom-id")
    assert response.status_code == 409
    assert response.json() == {"statusCode": 409, "error": "Conflict",
                               "message": "Saved object [action/custom-id] conflict"}


def test_an_unknown_space_is_a_json_404_on_the_api_and_the_404_page_elsewhere(kibana):
    response = kibana.get("/s/nowhere/api/actions/connectors")
    assert response.status_code == 404
    assert response.json() == {"statusCode": 404, "error": "Not Found", "message": "Saved object [space/nowhere] not found"}
    page = kibana.get("/s/nowhere/connectors/")
    assert page.status_code == 404 and "text/html" in page.headers["content-type"]


def test_copy_to_space_brings_the_connector_without_its_secrets(kibana, simulator):
    create_space(kibana, "space2")
    source_id = create_connector(kibana, "", simulator.url).json()["id"]
    response = kibana.post("/api/spaces/_copy_saved_objects",
                           json={"objects": [{"type": "action", "id": source_id}], "spaces": ["space2"]})
    assert response.status_code == 200, response.text
    result = response.json()["space2"]
    assert result["success"] is True and result["successCount"] == 1
    copy_id = result["successResults"][0]["destinationId"]
    assert copy_id != source_id
    copied = kibana.get(f"/s/space2/api/actions/connector/{copy_id}").json()
    assert copied["is_missing_secrets"] is True
    assert copied["config"]["apiUrl"] == simulator.url
    assert Connector.objects.get(pk=copy_id).encrypted_api_key == ""
    assert kibana.get(f"/api/actions/connector/{source_id}").json()["is_missing_secrets"] is False


def test_a_space_holding_connectors_is_not_deleted_and_the_refusal_lists_them(kibana, simulator):
    create_space(kibana, "busy")
    connector_id = create_connector(kibana, "/s/busy", simulator.url).json()["id"]
    response = kibana.delete("/api/spaces/space/busy")
    assert response.status_code == 409
    assert connector_id in response.json()["message"] and "A genAi action" in response.json()["message"]
    assert kibana.get("/api/spaces/space/busy").status_code == 200
