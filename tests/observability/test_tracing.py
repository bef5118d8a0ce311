"""OpenTelemetry spans: one per execution (GenAI conventions), the HTTP call as its child, an incoming traceparent
continued, no prompt, body or secret in any attribute; once end to end through the OTLP/HTTP exporter to a real
OTLP receiver."""

import json
import time

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from tests.helpers.execute import execute_over_http, run_body
from tests.servers.otlp_receiver import OTLPReceiver
from usage.observability import tracing

pytest_plugins = ["tests.servers.asgi_server"]

SECRET = "sk-trace-SECRET-0123456789"
PROMPT = "Tell me the launch codes, please"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
ASK = {"messages": [{"role": "user", "content": PROMPT}]}


class BuiltSpans(InMemorySpanExporter):
    """The in-memory exporter, read once the builder thread has built every queued execution's spans."""

    def get_finished_spans(self):
        assert tracing.flush(timeout=10), "spans still unbuilt after 10 s"
        return super().get_finished_spans()


@pytest.fixture
def spans(settings):
    """Trace into the SDK's in-memory exporter for one test."""
    exporter = BuiltSpans()
    tracing.install(SimpleSpanProcessor(exporter))
    yield exporter
    tracing.shutdown()
    settings.TRACING_ENABLED = False


def by_name(finished) -> dict:
    return {span.name: span for span in finished}


def assert_nothing_secret(finished) -> None:
    for span in finished:
        for key, value in span.attributes.items():
            text = json.dumps(value) if not isinstance(value, str) else value
            assert SECRET not in text and PROMPT not in text and "You said" not in text, (span.name, key)


def test_an_execution_is_one_genai_span_with_the_http_call_as_child_continuing_the_traceparent(
    spans, asgi_live_server, recorded_events, operator, make_connector, fake_openai
):
    connector = make_connector(api_url=fake_openai.url("ok"), default_model="gpt-4o-mini", api_key=SECRET)
    sent = time.time_ns()
    response = execute_over_http(asgi_live_server, connector, run_body(ASK), user=operator,
                                 headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"})
    answered = time.time_ns()
    assert response.json()["status"] == "ok"
    recorded_events.wait_for(1)
    finished = by_name(spans.get_finished_spans())
    assert set(finished) == {"chat gpt-4o-mini", "POST"}
    chat, http = finished["chat gpt-4o-mini"], finished["POST"]
    # Built after the answer, with the times the execution noted: the call inside the execution, both inside
    # the request.
    assert sent <= chat.start_time < http.start_time < http.end_time <= chat.end_time <= answered
    assert chat.kind == SpanKind.CLIENT
    assert f"{chat.context.trace_id:032x}" == TRACE_ID and f"{chat.parent.span_id:016x}" == PARENT_ID
    assert http.parent.span_id == chat.context.span_id and http.context.trace_id == chat.context.trace_id
    assert chat.attributes["gen_ai.operation.name"] == "chat"
    assert chat.attributes["gen_ai.provider.name"] == "openai" and chat.attributes["gen_ai.system"] == "openai"
    assert chat.attributes["gen_ai.request.model"] == "gpt-4o-mini"
    assert chat.attributes["gen_ai.response.model"] == "gpt-4o-mini"
    assert chat.attributes["gen_ai.response.id"] == "chatcmpl-fake"
    assert chat.attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert chat.attributes["gen_ai.usage.input_tokens"] == 13  # the fake provider's count for this prompt
    assert chat.attributes["gen_ai.usage.output_tokens"] == 9
    assert chat.attributes["gen_ai.usage.cache_read.input_tokens"] == 2
    assert chat.attributes["connectors.connector.id"] == connector.pk
    assert chat.attributes["connectors.space.id"] == "default"
    assert chat.attributes["server.address"] == "127.0.0.1"
    assert chat.status.status_code == StatusCode.UNSET
    assert http.attributes["http.request.method"] == "POST"
    assert http.attributes["http.response.status_code"] == 200
    assert http.attributes["url.full"] == fake_openai.url("ok")
    assert chat.start_time <= http.start_time and http.end_time <= chat.end_time
    assert_nothing_secret(finished.values())


def test_without_a_traceparent_the_execution_starts_a_trace(spans, asgi_live_server, recorded_events, operator,
                                                           make_connector, fake_openai):
    connector = make_connector(api_url=fake_openai.url("ok"))
    execute_over_http(asgi_live_server, connector, run_body(ASK), user=operator)
    recorded_events.wait_for(1)
    chat = next(span for span in spans.get_finished_spans() if span.name.startswith("chat"))
    assert chat.parent is None


def test_the_span_names_the_space_the_call_was_made_in(spans, asgi_live_server, recorded_events, operator,
                                                      make_connector, fake_openai):
    import httpx

    from connectors.spaces.models import Space
    from tests.conftest import basic_auth

    marketing = Space.objects.create(id="marketing", name="Marketing")
    connector = make_connector(api_url=fake_openai.url("ok"), default_model="gpt-4o", space=marketing)
    response = httpx.post(f"{asgi_live_server.url}/s/marketing/api/actions/connector/{connector.pk}/_execute",
                          json=run_body(ASK), headers={"kbn-xsrf": "true", "Authorization": basic_auth(operator)},
                          timeout=30)
    assert response.json()["status"] == "ok"
    recorded_events.wait_for(1)
    chat = by_name(spans.get_finished_spans())["chat gpt-4o"]
    assert chat.attributes["connectors.space.id"] == "marketing"


def test_a_provider_error_marks_both_spans_as_errors_without_its_message(spans, asgi_live_server, recorded_events,
                                                                         operator, make_connector, fake_openai):
    connector = make_connector(api_url=fake_openai.url("status-429"), default_model="gpt-4o", api_key=SECRET)
    assert execute_over_http(asgi_live_server, connector, run_body(ASK), user=operator).json()["status"] == "error"
    recorded_events.wait_for(1)
    finished = by_name(spans.get_finished_spans())
    chat, http = finished["chat gpt-4o"], finished["POST"]
    assert chat.status.status_code == StatusCode.ERROR and chat.attributes["error.type"] == "429"
    assert http.status.status_code == StatusCode.ERROR and http.attributes["http.response.status_code"] == 429
    assert "gen_ai.usage.input_tokens" not in chat.attributes
    assert_nothing_secret(finished.values())


def test_a_stream_span_lasts_the_stream_and_has_its_finish_reason(spans, asgi_live_server, recorded_events, operator,
                                                                  make_connector, fake_openai):
    connector = make_connector(api_url=fake_openai.url("stream-usage-in-choice"), default_model="gpt-4o", api_key=SECRET)
    response = execute_over_http(asgi_live_server, connector, run_body(ASK, sub_action="stream", stream=True),
                                 user=operator)
    assert response.headers["content-type"].startswith("text/event-stream")
    recorded_events.wait_for(1)
    finished = by_name(spans.get_finished_spans())
    chat = finished["chat gpt-4o"]
    assert chat.attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert chat.attributes["gen_ai.response.id"]
    assert chat.attributes["gen_ai.usage.output_tokens"] > 0
    assert finished["POST"].parent.span_id == chat.context.span_id
    assert_nothing_secret(finished.values())


def test_an_execution_refused_before_the_network_has_no_http_span(spans, asgi_live_server, recorded_events, operator,
                                                                  make_connector, fake_openai):
    connector = make_connector(api_url=fake_openai.url("ok"))
    execute_over_http(asgi_live_server, connector, run_body(ASK, sub_action="noSuchThing"), user=operator)
    recorded_events.wait_for(1)
    (chat,) = spans.get_finished_spans()
    assert chat.name == "chat" and chat.status.status_code == StatusCode.ERROR


def test_tracing_is_off_without_an_endpoint(settings, make_connector):
    from connectors.outbound.record import ExecutionRecord

    settings.TRACING_ENABLED = False
    tracing.shutdown()
    record = ExecutionRecord(make_connector(), user=None, source="api", sub_action="run")
    assert record.observation.traced is False and not tracing.enabled()


def test_spans_reach_a_real_otlp_receiver_through_the_exporter(settings, monkeypatch, asgi_live_server,
                                                               recorded_events, operator, make_connector, fake_openai):
    receiver = OTLPReceiver().start()
    try:
        # Configured as an operator would: the standard variables, read by the SDK's OTLP/HTTP exporter.
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        settings.TRACING_ENABLED, settings.OTEL_SERVICE_NAME = True, "connectors-admin-test"
        tracing.shutdown()
        connector = make_connector(api_url=fake_openai.url("ok"), default_model="gpt-4o-mini", api_key=SECRET)
        execute_over_http(asgi_live_server, connector, run_body(ASK), user=operator,
                          headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"})
        recorded_events.wait_for(1)
        tracing.shutdown()  # as at server shutdown: the batch processor exports what it holds
        received = {span.name: span for span in receiver.wait_for(2)}
    finally:
        receiver.stop()
        settings.TRACING_ENABLED = False
        tracing.shutdown()
    chat, http = received["chat gpt-4o-mini"], received["POST"]
    assert chat.trace_id == TRACE_ID and chat.parent_span_id == PARENT_ID
    assert http.parent_span_id == chat.span_id
    assert chat.resource["service.name"] == "connectors-admin-test"
    assert chat.attributes["gen_ai.request.model"] == "gpt-4o-mini"
    assert chat.attributes["gen_ai.usage.input_tokens"] == 13
    assert chat.attributes["gen_ai.response.finish_reasons"] == ("stop",)
    for span in received.values():
        assert SECRET not in repr(span.attributes) and PROMPT not in repr(span.attributes)
