"""GET /metrics: who may read it, and what it says after executions, read back with prometheus_client's parser."""


import json

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import basic_auth
from tests.helpers.execute import HELLO, execute_with_client, run_body
from usage.observability import metrics

pytestmark = pytest.mark.django_db

TOKEN = "metrics-token-0123456789abcdef"


def scrape(client, **headers) -> dict:
    """{sample name: [(labels, value)]} of a scrape with the token."""
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}", **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(response.content.decode()):
        samples.setdefault(family.name, [])
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def value(samples: dict, name: str, **labels) -> float:
    return sum(v for sample_labels, v in samples.get(name, []) if all(sample_labels.get(k) == w for k, w in labels.items()))


@pytest.fixture
def token(settings):
    settings.METRICS_BEARER_TOKEN = TOKEN
    settings.METRICS_ALLOWED_NETWORKS = []


# --- who may read ---------------------------------------------------------------------------------------------

def test_metrics_are_closed_to_everyone_by_default(client, settings, admin_user):
    settings.METRICS_BEARER_TOKEN, settings.METRICS_ALLOWED_NETWORKS = "", []
    assert client.get("/metrics").status_code == 403
    client.force_login(admin_user)  # not even a superuser's session opens them
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 403 and b"METRICS_BEARER_TOKEN" in response.content


def test_anonymous_scrape_without_the_token_gets_401_with_a_bearer_challenge(client, token):
    response = client.get("/metrics")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert b"connectors_executions" not in response.content


def test_a_wrong_token_gets_401_and_never_the_metrics(client, token):
    for header in (f"Bearer {TOKEN}x", "Bearer wrong", f"Basic {TOKEN}", TOKEN):
        response = client.get("/metrics", HTTP_AUTHORIZATION=header)
        assert response.status_code == 401, header
        assert b"connectors_" not in response.content


def test_the_right_token_reads_the_metrics(client, token):
    samples = scrape(client)
    assert "connectors_executions" in samples


def test_a_client_in_an_allowed_network_reads_them_without_a_token(client, settings):
    import ipaddress

    settings.METRICS_BEARER_TOKEN = ""
    settings.METRICS_ALLOWED_NETWORKS = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("127.0.0.1/32")]
    response = client.get("/metrics")  # Django's test client connects from 127.0.0.1
    assert response.status_code == 200 and b"# TYPE connectors_executions_total counter" in response.content
    settings.METRICS_ALLOWED_NETWORKS = [ipaddress.ip_network("10.0.0.0/8")]
    response = client.get("/metrics")
    assert response.status_code == 403 and b"METRICS_ALLOWED_NETWORKS" in response.content


def test_only_get_is_allowed(client, token):
    assert client.post("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 405


# --- what it counts -------------------------------------------------------------------------------------------

def test_an_execution_is_counted_with_its_tokens_latencies_and_upstream_status(client, token, operator,
                                                                              make_connector, fake_openai):
    connector = make_connector(api_url=fake_openai.url("ok"), default_model="gpt-4o-mini")
    assert execute_with_client(client, connector, user=operator).json()["status"] == "ok"
    samples = scrape(client)
    labels = {"connector": connector.pk, "provider": "OpenAI", "model": "gpt-4o-mini", "sub_action": "run",
              "outcome": "success"}
    assert value(samples, "connectors_executions_total", **labels) == 1
    # The fake provider reports 9 prompt (2 cached) and 9 completion (1 reasoning) tokens.
    for kind, count in (("prompt", 9), ("completion", 9), ("cached", 2), ("reasoning", 1)):
        assert value(samples, "connectors_tokens_total", connector=connector.pk, model="gpt-4o-mini", kind=kind) == count
    assert value(samples, "connectors_upstream_latency_seconds_count", connector=connector.pk) == 1
    assert value(samples, "connectors_upstream_latency_seconds_sum", connector=connector.pk) > 0
    assert value(samples, "connectors_added_latency_seconds_count", connector=connector.pk) == 1
    assert value(samples, "connectors_upstream_responses_total", connector=connector.pk, status="200") == 1


def test_every_per_connector_series_carries_the_connectors_space(client, token, operator, make_connector,
                                                                 fake_openai):
    from connectors.spaces.models import Space

    marketing = Space.objects.create(id="marketing", name="Marketing")
    connector = make_connector(api_url=fake_openai.url("ok"), default_model="gpt-4o-mini", space=marketing)
    answer = client.post(f"/s/marketing/api/actions/connector/{connector.pk}/_execute", json.dumps(run_body()),
                         content_type="application/json", HTTP_KBN_XSRF="true", HTTP_AUTHORIZATION=basic_auth(operator))
    assert answer.json()["status"] == "ok"
    samples = scrape(client)
    for name in ("connectors_executions_total", "connectors_tokens_total", "connectors_upstream_latency_seconds_count",
                 "connectors_added_latency_seconds_count", "connectors_upstream_responses_total"):
        spaces = {labels["space"] for labels, v in samples[name] if labels["connector"] == connector.pk and v}
        assert spaces == {"marketing"}, name
    assert value(samples, "connectors_tokens_total", connector=connector.pk, kind="prompt", space="marketing") == 9
    assert value(samples, "connectors_upstream_latency_seconds_count", connector=connector.pk, space="default") == 0


def test_the_label_children_are_bound_once_per_connector_space_and_outcome(token, monkeypatch):
    from types import SimpleNamespace

    bound = []
    original = metrics.TOKENS.labels

    def counting_labels(*values):
        bound.append(values)
        return original(*values)

    monkeypatch.setattr(metrics.TOKENS, "labels", counting_labels)
    monkeypatch.setattr(metrics, "_children", {})
    event = SimpleNamespace(connector_id="bound-once", response_model="m", requested_model="m", sub_action="run",
                            outcome="success", space_id="team-a", prompt_tokens=3, completion_tokens=2,
                            cached_tokens=0, reasoning_tokens=0, cost_nanos=0, upstream_status=200)
    for _ in range(5):
        metrics.observe_execution(event, "OpenAI", 0.01, 0.02)
    assert len(bound) == len(metrics.TOKEN_KINDS)  # the first execution's lookups, none after
    metrics.observe_execution(SimpleNamespace(**{**vars(event), "space_id": "team-b"}), "OpenAI", 0.01, 0.02)
    assert len(bound) == 2 * len(metrics.TOKEN_KINDS) and {values[-1] for values in bound} == {"team-a", "team-b"}


def test_failures_are_counted_by_outcome_and_upstream_status(client, token, operator, make_connector, fake_openai):
    connector = make_connector(api_url=fake_openai.url("status-429"), default_model="gpt-4o")
    assert execute_with_client(client, connector, user=operator).json()["status"] == "error"
    refused = run_body(sub_action="noSuchThing")  # refused before the network
    execute_with_client(client, connector, refused, user=operator)
    samples = scrape(client)
    assert value(samples, "connectors_executions_total", connector=connector.pk, outcome="failure",
                 sub_action="run") == 1
    # A caller's unknown sub-action is free text: it is counted as "other", never as its own label.
    assert value(samples, "connectors_executions_total", connector=connector.pk, sub_action="other") == 1
    assert value(samples, "connectors_upstream_responses_total", connector=connector.pk, status="429") == 1
    # Only the execution that reached the provider has an upstream time.
    assert value(samples, "connectors_upstream_latency_seconds_count", connector=connector.pk) == 1


def test_unreachable_provider_counts_as_status_none(client, token, operator, make_connector, actions_config):
    connector = make_connector(api_url="http://127.0.0.1:9/v1/chat/completions", default_model="gpt-4o")
    assert execute_with_client(client, connector, user=operator).json()["status"] == "error"
    assert value(scrape(client), "connectors_upstream_responses_total", connector=connector.pk, status="none") == 1


def test_model_names_past_the_bound_are_counted_as_other(client, token, settings, operator, make_connector,
                                                         fake_openai):
    settings.METRICS_MODELS_PER_CONNECTOR = 2
    connector = make_connector(api_url=fake_openai.url("ok"))
    for model in ("m-one", "m-two", "m-three", "m-four", "m-one"):
        execute_with_client(client, connector, run_body({**HELLO, "model": model}), user=operator)
    samples = scrape(client)
    models = {labels["model"] for labels, _v in samples["connectors_executions_total"]
              if labels["connector"] == connector.pk}
    assert models == {"m-one", "m-two", "other"}
    assert value(samples, "connectors_executions_total", connector=connector.pk, model="other") == 2
    assert value(samples, "connectors_executions_total", connector=connector.pk, model="m-one") == 2


def test_a_model_name_with_a_lone_surrogate_is_counted_as_the_event_log_stores_it_and_scrapes_keep_working(
        client, token, operator, make_connector, fake_openai):
    # The registry keeps a label for the process's life: one that UTF-8 cannot encode would break every later
    # scrape, in whatever test (or request) came after.
    connector = make_connector(api_url=fake_openai.url("model-surrogate"))
    assert execute_with_client(client, connector, user=operator).json()["status"] == "ok"
    samples = scrape(client)
    assert value(samples, "connectors_executions_total", connector=connector.pk, model="gpt-\ufffd") == 1
    assert metrics.model_label(connector.pk, "gpt-\x00") == "gpt-\ufffd"


def test_cache_hits_and_misses_are_counted(client, token, operator, make_connector, fake_openai):
    connector = make_connector(api_url=fake_openai.url("ok"))
    before = scrape(client)
    execute_with_client(client, connector, user=operator)
    execute_with_client(client, connector, user=operator)
    after = scrape(client)
    for cache in ("connector", "credential"):
        misses = value(after, "connectors_cache_requests_total", cache=cache, result="miss") - value(
            before, "connectors_cache_requests_total", cache=cache, result="miss")
        hits = value(after, "connectors_cache_requests_total", cache=cache, result="hit") - value(
            before, "connectors_cache_requests_total", cache=cache, result="hit")
        assert misses >= 1 and hits >= 1, cache


def test_event_writer_failures_and_queue_depth_are_exported(client, token):
    before = value(scrape(client), "connectors_event_write_failures_total", reason="rejected")
    metrics.count_event_write_failure("rejected")
    metrics.set_event_queue_depth(3)
    samples = scrape(client)
    assert value(samples, "connectors_event_write_failures_total", reason="rejected") == before + 1
    assert value(samples, "connectors_event_writer_queue_depth") == 3
    metrics.set_event_queue_depth(0)


def test_refusals_are_declared_for_the_budget_and_rate_limit_checks(client, token):
    samples = scrape(client)
    assert "connectors_refusals" in samples  # declared (HELP and TYPE) before anything counts one


def test_with_metrics_off_nothing_is_counted_and_the_endpoint_is_gone(client, token, settings, operator,
                                                                       make_connector, fake_openai):
    connector = make_connector(api_url=fake_openai.url("ok"))
    settings.METRICS_ENABLED = False
    execute_with_client(client, connector, user=operator)
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 404
    settings.METRICS_ENABLED = True
    assert value(scrape(client), "connectors_executions_total", connector=connector.pk) == 0


@pytest.mark.django_db(transaction=True)
def test_the_event_writer_reports_its_queue_and_its_failed_attempts(client, token, monkeypatch):
    from django.db import OperationalError
    from django.utils import timezone

    from usage.models import ExecutionEvent
    from usage.recording import writer as recording

    failures = {"left": 2}
    original = recording._insert

    def flaky_insert(events):
        if failures["left"]:
            failures["left"] -= 1
            raise OperationalError("server closed the connection unexpectedly")
        return original(events)

    before = value(scrape(client), "connectors_event_write_failures_total", reason="database_unavailable")
    monkeypatch.setattr(recording, "_insert", flaky_insert)
    writer = recording.EventWriter(retry_delays=(0.01,))
    for index in range(5):  # queued before the thread starts: the depth is exactly what is waiting
        writer.submit(ExecutionEvent(timestamp=timezone.now(), connector_id="metrics-writer", connector_name="w",
                                     source="api", sub_action="run", outcome="success", error_message=str(index)))
    assert value(scrape(client), "connectors_event_writer_queue_depth") == 5
    writer.start()
    assert writer.flush(timeout=10)
    writer.stop(timeout=5)
    samples = scrape(client)
    assert value(samples, "connectors_event_writer_queue_depth") == 0
    assert value(samples, "connectors_event_write_failures_total", reason="database_unavailable") == before + 2


@pytest.mark.django_db(transaction=True)
def test_cost_and_rate_limit_refusals_are_counted(client, token, settings, operator, make_connector, fake_openai):
    import datetime as dt
    from decimal import Decimal

    from usage.governance.enforcement.counters import reset_counter_store
    from usage.governance.models import Price, RateLimit, Scope
    from usage.governance.pricing.prices import forget_table

    settings.REDIS_URL = ""  # the database's counters
    reset_counter_store()
    forget_table()
    try:
        connector = make_connector(api_url=fake_openai.url("ok"), default_model="gpt-4o")
        Price.objects.create(model_pattern="gpt-4o", valid_from=dt.date(2020, 1, 1),
                             input_per_million=Decimal("1000000"), output_per_million=Decimal("2000000"),
                             connector_id=connector.pk)
        RateLimit.objects.create(scope=Scope.CONNECTOR, connector_id=connector.pk, requests_per_minute=1)
        assert execute_with_client(client, connector, user=operator).json()["status"] == "ok"
        # The second in the minute:
        assert execute_with_client(client, connector, user=operator).json()["status"] == "error"
        samples = scrape(client)
        # 1 (resp. 2) currency units per prompt (resp. completion) token: 9 + 9 tokens cost 27.
        assert value(samples, "connectors_cost_total", connector=connector.pk, model="gpt-4o",
                     currency=settings.USAGE_CURRENCY, space="default") == 27
        assert value(samples, "connectors_refusals_total", connector=connector.pk, reason="rate_limit",
                     space="default") == 1
    finally:
        reset_counter_store()
        forget_table()
