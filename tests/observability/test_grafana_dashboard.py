"""docs/grafana-dashboard.json reads only metrics the app exports, with labels those metrics have."""

import json
import re
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import basic_auth
from usage.observability import metrics

pytestmark = pytest.mark.django_db

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana-dashboard.json"
TOKEN = "grafana-check-token-0123456789"
METRIC_NAME = re.compile(r"\bconnectors_[a-z0-9_]+")
LABEL_MATCHER = re.compile(r"(connectors_[a-z0-9_]+)\{([^}]*)\}")
MATCHER_LABEL = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
BY_CLAUSE = re.compile(r"\bby\s*\(([^)]*)\)")


def queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            exprs.append(query["query"])
    return exprs


def exported(client, settings, operator, make_connector, fake_openai) -> tuple[set[str], dict[str, set[str]]]:
    """The metric names of a scrape after one execution, and each family's label names (the app's own metrics)."""
    settings.METRICS_BEARER_TOKEN = TOKEN
    connector = make_connector(api_url=fake_openai.url("ok"))
    params = {"params": {"subAction": "run", "subActionParams": {"body": json.dumps({"messages": [{"role": "user", "content": "Hi"}]})}}}
    client.post(f"/api/actions/connector/{connector.pk}/_execute", json.dumps(params), content_type="application/json",
                HTTP_AUTHORIZATION=basic_auth(operator), HTTP_KBN_XSRF="true")
    text = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").content.decode()
    names, labels = set(), {}
    for family in text_string_to_metric_families(text):
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}.get(family.type, ("",))
        for suffix in suffixes:  # declared names, even of a family with no sample yet (the refusals)
            names.add(family.name + suffix)
        names.update(sample.name for sample in family.samples)
    for metric in (value for value in vars(metrics).values() if hasattr(value, "_labelnames")):
        base = metric._name
        extra = ("le",) if metric._type == "histogram" else ()
        for suffix in ("", "_total", "_bucket", "_sum", "_count"):
            labels[base + suffix] = set(metric._labelnames) | set(extra)
    return names, labels


def problems(exprs: list[str], names: set[str], labels: dict[str, set[str]]) -> list[str]:
    found = []
    for expr in exprs:
        used = set(METRIC_NAME.findall(expr))
        if not used:
            found.append(f"reads no metric of the app: {expr}")
        found += [f"{name} is not exported (in {expr})" for name in sorted(used - names)]
        for name, matchers in LABEL_MATCHER.findall(expr):
            for label in MATCHER_LABEL.findall(matchers):
                if label not in labels.get(name, set()):
                    found.append(f"{name} has no label {label}")
        allowed = set().union(*(labels.get(name, set()) for name in used)) if used else set()
        for clause in BY_CLAUSE.findall(expr):
            for label in filter(None, (part.strip() for part in clause.split(","))):
                if label not in allowed:
                    found.append(f"by ({label}) is no label of {sorted(used)}")
    return found


def test_every_query_of_the_dashboard_reads_metrics_the_app_exports(client, settings, operator, make_connector,
                                                                    fake_openai):
    names, labels = exported(client, settings, operator, make_connector, fake_openai)
    exprs = queries()
    assert len(exprs) >= 12
    assert problems(exprs, names, labels) == []
    # Every metric the app exports is on the dashboard.
    used = set().union(*(METRIC_NAME.findall(expr) for expr in exprs))
    families = {metric._name for metric in vars(metrics).values() if hasattr(metric, "_labelnames")}
    assert {name for name in families if not any(u.startswith(name) for u in used)} == set()


def test_the_check_finds_an_unknown_metric_or_label(client, settings, operator, make_connector, fake_openai):
    names, labels = exported(client, settings, operator, make_connector, fake_openai)
    assert problems(["sum(rate(connectors_no_such_metric_total[5m]))"], names, labels)
    assert problems(['sum by (user) (rate(connectors_executions_total{connector="x"}[5m]))'], names, labels)
    assert problems(['rate(connectors_executions_total{user_name="x"}[5m])'], names, labels)
    assert problems(["up"], names, labels)
