"""End to end in Chromium: a usage viewer opens a dashboard, the plotly charts draw from the local server only,
the range changes, and the CSV downloads."""

import csv
import io
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from django.utils import timezone

from tests.browser.fixtures import assert_accessible, screenshot
from tests.conftest import PASSWORD
from tests.helpers.events import record_mix
from usage.models import ExecutionEvent

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHART_IDS = (
    "chart-tokens-over-time",
    "chart-cost-over-time",
    "chart-tokens-per-user",
    "chart-tokens-per-model",
    "chart-requests-by-outcome",
    "chart-duration-percentiles",
)


def log_in_via(page, url: str, user) -> None:
    """Open ``url`` logged out, log in on the form it redirects to, and land back on it (a shared link's path).

    Not tests.browser.fixtures.log_in: after a plain login Django sends a user to LOGIN_REDIRECT_URL, the connector
    list, which a usage viewer may not open.
    """
    page.goto(url)
    page.wait_for_url("**/accounts/login/?next=**")
    page.fill("#id_username", user.get_username())
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(url)


def wait_for_charts(page) -> None:
    for chart_id in CHART_IDS:
        # plotly.js draws into <svg class="main-svg">; data-rendered is set when Plotly.newPlot resolves.
        page.locator(f"#{chart_id}[data-rendered=true] svg.main-svg").first.wait_for()


def test_a_usage_viewer_sees_the_charts_changes_the_range_and_downloads_the_csv(page, live_server, analyst, make_connector):
    connector = make_connector(name="Browser usage")
    record_mix(timezone.now() - timedelta(days=12), hours=12, connector_id=connector.pk, per_hour=2, seed=1)
    record_mix(timezone.now() - timedelta(hours=30), hours=30, connector_id=connector.pk, per_hour=3, seed=2)
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))

    log_in_via(page, f"{live_server.url}/usage/", analyst)
    page.click(f"text={connector.name}")
    page.wait_for_url(f"**/usage/connectors/{connector.pk}/**")
    wait_for_charts(page)
    assert page.locator("#chart-tokens-over-time .bars path").count() > 0
    week = int(page.inner_text("[data-total=requests]").replace(",", ""))
    assert week == 30 * 3
    assert "Last 7 days" in page.inner_text("[data-range-label]") and "UTC" in page.inner_text("[data-tz-label]")
    screenshot(page, "usage-dashboard-7d")
    assert_accessible(page)

    page.click("[data-range='30d']")
    page.wait_for_url("**range=30d**")
    wait_for_charts(page)
    assert int(page.inner_text("[data-total=requests]").replace(",", "")) == ExecutionEvent.objects.count() == 30 * 3 + 12 * 2
    assert "daily buckets" in page.inner_text("[data-range-label]")
    screenshot(page, "usage-dashboard-30d")

    with page.expect_download() as download_info:
        page.click("[data-export=series]")
    download = download_info.value
    assert download.suggested_filename.startswith(f"usage-series-{connector.pk}-")
    with open(download.path(), encoding="utf-8") as handle:
        rows = list(csv.DictReader(io.StringIO(handle.read())))
    assert len(rows) == 30 and sum(int(row["requests"]) for row in rows) == 30 * 3 + 12 * 2

    assert not page.console_errors, page.console_errors
    server = urlsplit(live_server.url).netloc
    for url in requests:
        parts = urlsplit(url)
        assert parts.scheme in ("data", "blob") or parts.netloc == server, f"request left the server: {url}"
    assert any(url.endswith("/static/vendor/plotly.min.js") for url in requests)


def test_an_empty_dashboard_shows_its_empty_state_without_errors(page, live_server, analyst, make_connector):
    connector = make_connector(name="Quiet connector")
    log_in_via(page, f"{live_server.url}/usage/connectors/{connector.pk}/?tz=Europe/Paris", analyst)
    assert "No executions in this range" in page.inner_text("[data-usage-empty]")
    assert "Europe/Paris" in page.inner_text("[data-tz-label]")
    screenshot(page, "usage-dashboard-empty")
    assert_accessible(page)
    assert not page.console_errors, page.console_errors
