"""GET /api/usage/events.ndjson and manage.py export_kibana_event_log: Kibana event-log documents for _bulk,
validated field by field against the event log's mapping (tests/fixtures/kibana-event-log-mapping.json), and
resumable with a cursor."""

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from tests.conftest import basic_auth
from tests.helpers.events import record as record_event
from usage.models import ExecutionEvent

pytest_plugins = ["tests.servers.asgi_server"]

MAPPING = json.loads((Path(__file__).resolve().parents[1] / "fixtures" / "kibana-event-log-mapping.json").read_text())
DATE = re.compile(MAPPING["_meta"]["date_pattern"])
SEMVER = re.compile(r"^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$")
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
URL = "/api/usage/events.ndjson"


def check_against_mapping(value, mapping: dict, path: str = "") -> None:
    """Fail unless ``value`` is indexable as ``mapping`` declares, every field of it declared (dynamic: false)."""
    if "properties" in mapping:
        items = value if isinstance(value, list) and mapping.get("type") == "nested" else [value]
        for item in items:
            assert isinstance(item, dict), f"{path}: expected an object, got {item!r}"
            for key, inner in item.items():
                assert key in mapping["properties"], f"{path}.{key} is not in Kibana's event-log mapping"
                check_against_mapping(inner, mapping["properties"][key], f"{path}.{key}".lstrip("."))
        return
    values = value if isinstance(value, list) else [value]
    if isinstance(value, list):
        assert mapping.get("meta", {}).get("isArray") == "true", f"{path}: an array where the mapping has none"
    kind = mapping["type"]
    for item in values:
        if kind in ("keyword", "text"):
            assert isinstance(item, str), f"{path}: {kind} needs a string, got {item!r}"
            assert len(item) <= mapping.get("ignore_above", 10**9), f"{path}: longer than ignore_above"
        elif kind == "long":
            assert isinstance(item, int) and not isinstance(item, bool) and -2**63 <= item < 2**63, f"{path}: {item!r}"
        elif kind == "date":
            assert isinstance(item, str) and DATE.match(item), f"{path}: {item!r} is not the event log's date format"
        elif kind == "boolean":
            assert isinstance(item, bool), f"{path}: {item!r}"
        elif kind == "version":
            assert isinstance(item, str) and SEMVER.match(item), f"{path}: {item!r}"
        else:
            raise AssertionError(f"{path}: type {kind} not handled by this check")


def parse_bulk(body: str) -> list[tuple[dict, dict]]:
    lines = body.splitlines()
    assert body == "" or body.endswith("\n"), "_bulk needs a final newline"
    assert len(lines) % 2 == 0
    return [(json.loads(lines[i]), json.loads(lines[i + 1])) for i in range(0, len(lines), 2)]


def execute_pairs(body: str) -> list[tuple[dict, dict]]:
    """The ``execute`` documents of an export (each execution also has its ``execute-start``)."""
    return [(action, doc) for action, doc in parse_bulk(body) if doc["event"]["action"] == "execute"]


# An execution with every field the export maps set, as the tests below expect to read it back.
EXECUTION = dict(user_name="ada", source="api", sub_action="run", outcome="success", duration_ms=1248.5,
                 upstream_status=200, requested_model="gpt-4o", response_model="gpt-4o-2024-08-06", prompt_tokens=10,
                 completion_tokens=12, total_tokens=22, usage_source="provider", request_bytes=78)


def record(connector, timestamp: datetime = T0, **fields) -> ExecutionEvent:
    return record_event(timestamp, connector_id=str(connector.pk), connector_name=connector.name,
                        **{**EXECUTION, **fields})


def export(client, user, **params):
    query = {"from": "2026-03-01T00:00:00Z", "to": "2026-03-02T00:00:00Z", **params}
    response = client.get(URL, query, HTTP_AUTHORIZATION=basic_auth(user))
    body = b"".join(response.streaming_content).decode() if response.streaming else response.content.decode()
    return response, body


@pytest.mark.django_db
def test_an_execution_becomes_kibanas_execute_document(client, analyst, operator, make_connector, fake_openai,
                                                       settings):
    settings.KIBANA_EVENT_LOG_INDEX = ".kibana-event-log-ds"
    connector = make_connector(api_url=fake_openai.url("ok"), name="My OpenAI")
    params = {"params": {"subAction": "run", "subActionParams": {"body": json.dumps(
        {"messages": [{"role": "user", "content": "Hello world"}]})}}}
    client.post(f"/api/actions/connector/{connector.pk}/_execute", json.dumps(params),
                content_type="application/json", HTTP_AUTHORIZATION=basic_auth(operator), HTTP_KBN_XSRF="true")
    event = ExecutionEvent.objects.get()
    response, body = export(client, analyst, **{"from": (event.timestamp - timedelta(minutes=1)).isoformat(),
                                                "to": (event.timestamp + timedelta(minutes=1)).isoformat()})
    assert response.status_code == 200 and response["Content-Type"] == "application/x-ndjson"
    ((start_action, start), (action, doc)) = parse_bulk(body)
    check_against_mapping(start, MAPPING)
    check_against_mapping(doc, MAPPING)
    assert action == {"create": {"_index": ".kibana-event-log-ds", "_id": doc["kibana"]["action"]["execution"]["uuid"]}}
    # Kibana's executor logs execute-start first: the same execution, no outcome, end, duration or usage.
    assert start_action["create"]["_id"] != action["create"]["_id"]
    assert start["event"] == {"provider": "actions", "action": "execute-start", "kind": "action",
                              "start": doc["event"]["start"]}
    assert start["message"] == f"action started: .gen-ai:{connector.pk}: My OpenAI"
    assert start["kibana"]["action"]["execution"] == {"uuid": doc["kibana"]["action"]["execution"]["uuid"],
                                                      "source": "http_request"}
    assert start["@timestamp"] == doc["event"]["start"] and start["user"] == doc["user"]
    # The event logger's own fields, the same on every document.
    for logged in (start, doc):
        assert logged["kibana"]["version"] == "9.1.0"
        assert logged["kibana"]["server_uuid"] == start["kibana"]["server_uuid"]
    assert doc["event"] == {
        "provider": "actions", "action": "execute", "kind": "action", "outcome": "success",
        "start": doc["event"]["start"], "end": doc["event"]["end"], "duration": round(event.duration_ms * 1_000_000)}
    assert doc["event"]["start"] == event.timestamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{event.timestamp.microsecond // 1000:03d}Z"
    assert doc["message"] == f"action executed: .gen-ai:{connector.pk}: My OpenAI"
    assert doc["user"] == {"name": operator.username}
    assert doc["ecs"] == {"version": "1.8.0"}
    assert doc["kibana"]["saved_objects"] == [{"rel": "primary", "type": "action", "id": connector.pk, "type_id": ".gen-ai"}]
    assert doc["kibana"]["space_ids"] == ["default"]
    action_field = doc["kibana"]["action"]
    assert (action_field["id"], action_field["name"], action_field["type_id"]) == (connector.pk, "My OpenAI", ".gen-ai")
    assert action_field["execution"]["source"] == "http_request"
    assert action_field["execution"]["usage"] == {"request_body_bytes": event.request_bytes}
    assert action_field["execution"]["gen_ai"] == {"usage": {
        "prompt_tokens": event.prompt_tokens, "completion_tokens": event.completion_tokens,
        "total_tokens": event.total_tokens}}
    assert "error" not in doc
    assert "sk-test-secret" not in body


@pytest.mark.django_db
def test_a_failure_has_its_error_and_no_token_usage(client, analyst, make_connector):
    connector = make_connector(name="Broken")
    record(connector, outcome="failure", upstream_status=429, prompt_tokens=0, completion_tokens=0, total_tokens=0,
           usage_source="none", error_message="Status code: 429. Message: API Error: Too Many Requests")
    ((_action, doc),) = execute_pairs(export(client, analyst)[1])
    check_against_mapping(doc, MAPPING)
    assert doc["event"]["outcome"] == "failure"
    assert doc["message"] == f"action execution failure: .gen-ai:{connector.pk}: Broken"
    # Kibana's actionErrorToMessage: message, service message, retry.
    assert doc["error"] == {"message": "an error occurred while running the action: Status code: 429. Message: API "
                                       "Error: Too Many Requests; retry: true"}
    assert "gen_ai" not in doc["kibana"]["action"]["execution"]


@pytest.mark.django_db
def test_preconfigured_connectors_are_space_agnostic_and_events_without_a_user_have_no_user(client, analyst,
                                                                                          make_connector):
    connector = make_connector()
    record(connector, connector_is_preconfigured=True, user_name="")
    ((_action, doc),) = execute_pairs(export(client, analyst)[1])
    check_against_mapping(doc, MAPPING)
    assert doc["kibana"]["saved_objects"][0]["space_agnostic"] is True
    assert "user" not in doc


@pytest.mark.django_db
def test_the_check_catches_what_the_mapping_would_not_index(client, analyst, make_connector):
    """The validation itself: a field outside the mapping, a date in another format, a string for a long."""
    connector = make_connector()
    record(connector)
    ((_action, doc),) = execute_pairs(export(client, analyst)[1])
    for broken in ({**doc, "model": "gpt-4o"}, {**doc, "@timestamp": "2026-03-01T12:00:00+00:00"},
                   {**doc, "event": {**doc["event"], "duration": "1248"}}):
        with pytest.raises(AssertionError):
            check_against_mapping(broken, MAPPING)


@pytest.mark.django_db
def test_a_cursor_resumes_after_the_last_exported_event_without_loss_or_duplicate(client, analyst, make_connector):
    connector = make_connector()
    events = [record(connector, timestamp=T0 + timedelta(seconds=s)) for s in (0, 1, 1, 1, 2)]  # ties on time
    seen, cursor, completes = [], "", []
    for _page in range(5):
        response, body = export(client, analyst, limit=2, cursor=cursor)
        assert response.status_code == 200
        seen += [doc["kibana"]["action"]["execution"]["uuid"] for _action, doc in execute_pairs(body)]
        cursor = response["X-Next-Cursor"]
        completes.append(response["X-Export-Complete"])
        if completes[-1] == "true":
            break
    assert completes == ["false", "false", "true"]
    assert len(seen) == len(set(seen)) == len(events)
    # Nothing new: an empty page, and the cursor stays where it was.
    response, body = export(client, analyst, cursor=cursor)
    assert body == "" and response["X-Next-Cursor"] == cursor and response["X-Export-Complete"] == "true"
    # A later event is the only one the next run ships.
    record(connector, timestamp=T0 + timedelta(hours=1))
    response, body = export(client, analyst, cursor=cursor)
    ((_action, doc),) = execute_pairs(body)
    assert doc["event"]["start"] == "2026-03-01T13:00:00.000Z"


@pytest.mark.django_db
def test_the_range_is_half_open_and_a_connector_can_be_chosen(client, analyst, make_connector):
    first, second = make_connector(name="first"), make_connector(name="second")
    record(first, timestamp=T0)
    record(second, timestamp=T0)
    record(first, timestamp=datetime(2026, 3, 2, tzinfo=UTC))  # == to: outside
    record(first, timestamp=datetime(2026, 3, 1, tzinfo=UTC))  # == from: inside
    docs = [doc for _a, doc in execute_pairs(export(client, analyst, connector=first.pk)[1])]
    assert [doc["kibana"]["action"]["id"] for doc in docs] == [first.pk, first.pk]
    assert len(execute_pairs(export(client, analyst)[1])) == 3


@pytest.mark.django_db
@pytest.mark.parametrize("params, message", [
    ({"from": ""}, "[from]: required"),
    ({"to": "tomorrow"}, "[to]: 'tomorrow' is not an ISO 8601"),
    ({"to": "2026-02-01T00:00:00Z"}, "[to]: must be later than [from]"),
    ({"cursor": "not-a-cursor"}, "[cursor]: not a cursor"),
    ({"limit": "0"}, "[limit]"),
    ({"limit": "many"}, "[limit]"),
])
def test_bad_parameters_get_400_naming_them(client, analyst, params, message):
    response, body = export(client, analyst, **params)
    assert response.status_code == 400 and message in json.loads(body)["message"]


@pytest.mark.django_db
def test_only_usage_viewers_may_export(client, analyst, outsider, operator):
    assert client.get(URL, {"from": "2026-03-01T00:00:00Z", "to": "2026-03-02T00:00:00Z"}).status_code == 401
    assert export(client, outsider)[0].status_code == 403
    assert export(client, operator)[0].status_code == 403
    assert export(client, analyst)[0].status_code == 200


@pytest.mark.django_db
def test_the_management_command_writes_the_same_lines_and_the_next_cursor(client, analyst, make_connector, tmp_path):
    connector = make_connector()
    for seconds in range(3):
        record(connector, timestamp=T0 + timedelta(seconds=seconds))
    _response, body = export(client, analyst)
    state, output = tmp_path / "cursor", tmp_path / "batch.ndjson"
    call_command("export_kibana_event_log", "--from", "2026-03-01T00:00:00Z", "--to", "2026-03-02T00:00:00Z",
                 "--cursor-file", str(state), "--limit", "2", "--output", str(output))
    assert output.read_text() == "".join(line + "\n" for line in body.splitlines()[:8])
    Path(str(state) + ".next").rename(state)  # the cron job does this once _bulk accepted the batch
    call_command("export_kibana_event_log", "--from", "2026-03-01T00:00:00Z", "--to", "2026-03-02T00:00:00Z",
                 "--cursor-file", str(state), "--output", str(output))
    assert output.read_text() == "".join(line + "\n" for line in body.splitlines()[8:])
    with pytest.raises(CommandError, match=r"\[cursor\]"):
        call_command("export_kibana_event_log", "--from", "2026-03-01T00:00:00Z", "--to", "2026-03-02T00:00:00Z",
                     "--cursor", "garbage")


def test_the_export_streams_under_the_asgi_server(asgi_live_server, analyst, make_connector):
    connector = make_connector()
    for seconds in range(3):
        record(connector, timestamp=T0 + timedelta(seconds=seconds))
    response = httpx.get(f"{asgi_live_server.url}{URL}", params={"from": "2026-03-01T00:00:00Z",
                         "to": "2026-03-02T00:00:00Z"}, headers={"Authorization": basic_auth(analyst)})
    assert response.status_code == 200 and response.headers["x-export-complete"] == "true"
    pairs = parse_bulk(response.text)
    assert len(pairs) == 6  # execute-start and execute for each
    for _action, doc in pairs:
        check_against_mapping(doc, MAPPING)


@pytest.mark.django_db
@pytest.mark.parametrize("fields, started, message", [
    # Validation errors: Kibana's executor validates before execute-start; retry false adds nothing.
    ({"sub_action": "run", "error_message": "error validating action params: [subAction]: expected value of type "
      "[string] but got [undefined]"}, False,
     "error validating action params: [subAction]: expected value of type [string] but got [undefined]"),
    ({"sub_action": "run", "error_message": "error validating action type config: Error configuring OpenAI action: "
      "Error: error validating url: target url \"x\" is not added to the Kibana config xpack.actions.allowedHosts"},
     False, "error validating action type config: Error configuring OpenAI action: Error: error validating url: "
     "target url \"x\" is not added to the Kibana config xpack.actions.allowedHosts"),
    # Thrown while running: the generic message, the reason, retry: true.
    ({"sub_action": "test", "error_message": "Status code: undefined. Message: Unexpected API Error: ECONNABORTED - "
      "timeout of 3000ms exceeded"}, True,
     "an error occurred while running the action: Status code: undefined. Message: Unexpected API Error: "
     "ECONNABORTED - timeout of 3000ms exceeded; retry: true"),
    # Refused before the executor (HTTP 400, no envelope): the reason alone, and no execute-start.
    ({"sub_action": "", "error_message": "[request body.params]: expected value of type [object] but got "
      "[undefined]"}, False, "[request body.params]: expected value of type [object] but got [undefined]"),
])
def test_error_message_is_kibanas_action_error_to_message_and_execute_start_follows_the_executor(
        client, analyst, make_connector, fields, started, message):
    connector = make_connector()
    record(connector, outcome="failure", usage_source="none", **fields)
    docs = [doc for _action, doc in parse_bulk(export(client, analyst)[1])]
    assert [doc["event"]["action"] for doc in docs] == (["execute-start"] if started else []) + ["execute"]
    assert docs[-1]["error"] == {"message": message}


@pytest.mark.django_db
def test_a_second_export_writes_the_same_bytes_so_bulk_create_refuses_duplicates(client, analyst, make_connector):
    connector = make_connector()
    record(connector)
    first, second = export(client, analyst)[1], export(client, analyst)[1]
    assert first == second
    ids = [action["create"]["_id"] for action, _doc in parse_bulk(first)]
    assert len(ids) == len(set(ids)) == 2
