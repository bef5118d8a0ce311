"""In Chromium, as each role, at 375 px and 1280 px: the Logs tab, the connector list, the dashboards,
the forms and the small pages; axe-core on every page visited (tests/browser.assert_accessible)."""

import csv
import re
from datetime import timedelta

import pytest
from django.utils import timezone

from connectors.accounts.api_keys import create_api_key
from connectors.models import Connector
from tests.browser.fixtures import assert_accessible, log_in, page_width
from tests.browser.test_usage_pages import log_in_via, wait_for_charts
from tests.helpers.events import record, record_mix

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PHONE = {"width": 375, "height": 800}
LAPTOP = {"width": 1280, "height": 900}
LONG_NAME = "x" * 255
NOTE_KEY = "connectors-admin.role-note-collapsed"  # static/js/page_tools.js


@pytest.fixture(params=[PHONE, LAPTOP], ids=["375px", "1280px"])
def viewport(request, page):
    page.set_viewport_size(request.param)
    return request.param


def assert_no_horizontal_scroll(page, viewport) -> None:
    assert page_width(page) <= viewport["width"], f"{page.url} is {page_width(page)} px wide"


def test_the_logs_tab_as_a_usage_viewer(page, live_server, analyst, make_connector, viewport):
    connector = make_connector(name="Logged in the browser")
    now = timezone.now()
    record_mix(now - timedelta(hours=20), hours=20, connector_id=connector.pk, per_hour=3, seed=3)
    record(now - timedelta(minutes=3), connector_id=connector.pk, outcome="failure", upstream_status=429,
           error_message="Status code: 429. Message: API Error: Too Many Requests - " + "slow down " * 30)
    log_in_via(page, f"{live_server.url}/connectors/{connector.pk}/logs/?range=24h", analyst)
    assert page.locator(".tabs a[aria-current=page]").inner_text() == "Logs"
    assert page.locator("[data-log-table] tbody tr").count() == 50
    assert page.locator("[data-own-calls-note]").count() == 0
    assert_no_horizontal_scroll(page, viewport)
    assert_accessible(page)
    # The user and model suggestions come once one of the two fields is used.
    assert page.locator("#log-users option").count() == 0
    page.focus("#log-user")
    page.wait_for_selector("[data-log-filters][data-suggestions-loaded]")
    users = page.eval_on_selector_all("#log-users option", "options => options.map(o => o.value)")
    assert {"alice", "bob", "carol"} <= set(users)
    assert "gpt-4o" in page.eval_on_selector_all("#log-models option", "options => options.map(o => o.value)")

    failures = int(page.inner_text("[data-count=failure] .value").replace(",", ""))
    page.fill("#log-q", "too many")
    page.click("[data-log-filters] button[type=submit]")
    page.wait_for_url("**q=too+many**")
    assert page.locator("[data-log-table] tbody tr").count() == 1
    assert "429" in page.inner_text("[data-log-table] tbody tr")
    page.click("[data-log-table] tbody tr a")
    page.wait_for_url("**/logs/*/**")
    assert "Too Many Requests" in page.inner_text("[data-event-detail]")
    assert_no_horizontal_scroll(page, viewport)
    assert_accessible(page)
    page.click("text=Back to the logs")
    page.wait_for_url("**/logs/?**q=too+many**")

    page.click("text=Clear filters")
    page.wait_for_url(lambda url: "q=" not in url)
    page.click("[data-count=failure]")
    page.wait_for_url("**outcome=failure**")
    assert page.locator("[data-log-table] tbody tr").count() == min(failures, 50)
    with page.expect_download() as download_info:
        page.click("[data-export=events]")
    with open(download_info.value.path(), encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == failures and {row["outcome"] for row in rows} == {"failure"}
    assert not page.console_errors, page.console_errors


def test_walking_older_and_newer_pages(page, live_server, analyst, make_connector):
    connector = make_connector(name="Paged")
    record_mix(timezone.now() - timedelta(hours=40), hours=40, connector_id=connector.pk, per_hour=3, seed=9)
    log_in_via(page, f"{live_server.url}/connectors/{connector.pk}/logs/", analyst)
    first = page.locator("[data-log-table] tbody tr").first.get_attribute("data-event")
    page.click("[data-page=older]")
    page.wait_for_url("**before=**")
    assert page.locator("[data-log-table] tbody tr").count() == 50
    page.click("[data-page=older]")
    page.wait_for_url("**before=**")
    assert page.locator("[data-log-table] tbody tr").count() == 20 and page.locator("[data-page=older]").count() == 0
    page.click("[data-page=newest]")
    page.wait_for_url(lambda url: "before=" not in url)
    assert page.locator("[data-log-table] tbody tr").first.get_attribute("data-event") == first


def test_a_connector_user_sees_only_their_own_calls_and_is_told(page, live_server, operator, make_connector):
    connector = make_connector(name="Shared connector")
    now = timezone.now()
    record(now - timedelta(minutes=5), connector_id=connector.pk, user_name="someone-else")
    record(now - timedelta(minutes=4), connector_id=connector.pk, user=operator, user_name=operator.username)
    log_in(page, live_server, operator)
    page.goto(f"{live_server.url}/connectors/{connector.pk}/")
    page.click(".tabs >> text=Logs")
    assert "your own calls only" in page.inner_text("[data-own-calls-note]")
    assert page.locator("[data-log-table] tbody tr").count() == 1
    assert page.locator("#log-user").count() == 0
    assert_accessible(page)


def test_the_connector_list_as_a_connector_admin(page, live_server, connector_admin, make_connector, viewport, actions_config):
    from tests.core.test_preconfigured import PRECONFIGURED

    actions_config(PRECONFIGURED)
    busy = make_connector(name="Busy")
    make_connector(name="Twin")
    twin = make_connector(name="Twin", api_url="https://api.openai.com/v1/chat/completions")
    make_connector(name=LONG_NAME)
    for _ in range(3):
        record(timezone.now(), connector_id=busy.pk)
    log_in(page, live_server, connector_admin)
    page.goto(f"{live_server.url}/connectors/")
    assert_no_horizontal_scroll(page, viewport)
    assert_accessible(page)
    row = page.locator(f"tr[data-connector='{busy.pk}']")
    assert row.locator("[data-requests]").inner_text() == "3" and row.locator(".health-success").count() == 1
    assert page.locator(f"tr[data-connector='{twin.pk}'] [data-disambiguation]").inner_text().endswith(twin.pk[-6:])
    assert page.locator("tr[data-connector='team-openai'] input[type=checkbox]").count() == 0

    page.click("[data-sort=requests]")
    page.wait_for_url("**sort=requests**")
    page.click("[data-sort=requests]")
    page.wait_for_url("**sort=-requests**")
    assert page.locator("tbody tr").first.get_attribute("data-connector") == busy.pk
    page.fill("#connector-search", "twin")
    page.click("form[role=search] button[type=submit]")
    page.wait_for_url("**q=twin**")
    assert page.locator("tbody tr").count() == 2

    page.goto(f"{live_server.url}/connectors/")
    for connector in Connector.objects.filter(name="Twin"):
        page.check(f"input[name=ids][value='{connector.pk}']")
    page.click("[data-bulk-delete]")
    assert page.locator("[data-bulk-list] li").count() == 2
    assert_no_horizontal_scroll(page, viewport)
    assert_accessible(page)
    page.click("[data-confirm-delete]")
    assert "Deleted 2 connectors" in page.inner_text(".messages")
    assert not Connector.objects.filter(name="Twin").exists()
    assert not page.console_errors, page.console_errors


def test_row_actions_lead_to_test_logs_dashboard_and_edit(page, live_server, connector_admin, make_connector):
    connector = make_connector(name="Actionable")
    log_in(page, live_server, connector_admin)
    for action, url in (("test", f"/connectors/{connector.pk}/#test"), ("logs", f"/connectors/{connector.pk}/logs/"),
                        ("dashboard", f"/usage/connectors/{connector.pk}/"), ("edit", f"/connectors/{connector.pk}/edit/")):
        page.goto(f"{live_server.url}/connectors/")
        page.click(f"tr[data-connector='{connector.pk}'] [data-action={action}]")
        page.wait_for_url(f"{live_server.url}{url}")
        assert_accessible(page)


def test_the_connector_page_fits_a_phone_with_long_names_and_snippets(page, live_server, operator, make_connector, viewport):
    connector = make_connector(name=LONG_NAME)
    log_in(page, live_server, operator)
    page.goto(f"{live_server.url}/connectors/{connector.pk}/")
    assert_no_horizontal_scroll(page, viewport)
    assert_accessible(page)


def test_copy_buttons_copy_the_snippet_and_the_new_key(page, live_server, operator, make_connector):
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url)
    connector = make_connector(name="Copied")
    log_in(page, live_server, operator)
    page.goto(f"{live_server.url}/connectors/{connector.pk}/")
    page.click("[data-copy='#snippet-kibana']")
    page.wait_for_selector("[data-copy='#snippet-kibana'][data-copied=true]")
    assert page.evaluate("navigator.clipboard.readText()") == page.inner_text("#snippet-kibana")
    page.goto(f"{live_server.url}/account/api-keys/")
    page.fill("#key-name", "copied key")
    page.click("text=Create key")
    page.click("[data-copy='#new-api-key']")
    page.wait_for_selector("[data-copy='#new-api-key'][data-copied=true]")
    copied = page.evaluate("navigator.clipboard.readText()")
    assert copied.startswith("cak_") and copied == page.inner_text("[data-new-api-key]")
    assert_accessible(page)


def test_revoking_an_api_key_asks_first(page, live_server, analyst):
    record_, _key = create_api_key(analyst, "to revoke")
    log_in_via(page, f"{live_server.url}/account/api-keys/", analyst)
    assert page.locator("a[href='/connectors/']").count() == 0  # a usage viewer may not open the connector list
    assert_accessible(page)
    page.click("[data-revoke]")
    assert_accessible(page)
    page.click("text=Cancel")
    page.wait_for_url("**/account/api-keys/")
    record_.refresh_from_db()
    assert record_.revoked_at is None
    page.click("[data-revoke]")
    page.click("[data-confirm-revoke]")
    assert "revoked" in page.inner_text(".messages")
    record_.refresh_from_db()
    assert record_.revoked_at is not None


def test_the_create_form_placeholder_marker_and_errors(page, live_server, connector_admin, viewport):
    log_in(page, live_server, connector_admin)
    page.goto(f"{live_server.url}/connectors/new/")
    assert page.is_visible("[data-field=api_key] [data-required-marker]")
    page.select_option("#id_provider", "Other")
    assert page.is_hidden("[data-field=api_key] [data-required-marker]")
    page.select_option("#id_provider", "Azure OpenAI")
    assert page.is_visible("[data-field=api_key] [data-required-marker]") and page.input_value("#id_api_url") == ""
    page.fill("#id_api_url", page.get_attribute("#id_api_url", "placeholder"))
    page.click("button:text-is('Save')")
    page.wait_for_load_state()
    assert "Replace {resource} in the URL" in page.inner_text("#id_api_url_error")
    assert page.locator("#id_name_error p").count() == 1
    for field in ("id_name", "id_api_url", "id_api_key"):
        for ref in (page.get_attribute(f"#{field}", "aria-describedby") or "").split():
            assert page.locator(f"#{ref}").count() == 1, ref
    assert_no_horizontal_scroll(page, viewport)
    assert_accessible(page)


def test_a_connector_admin_opens_the_dashboards_and_collapses_the_note(page, live_server, connector_admin, make_connector, viewport):
    connector = make_connector(name="Managed")
    record_mix(timezone.now() - timedelta(hours=30), hours=30, connector_id=connector.pk, per_hour=2, seed=5)
    connector_admin.is_staff = True  # the permissions note is for people who hand out roles
    connector_admin.save()
    log_in(page, live_server, connector_admin)
    page.goto(f"{live_server.url}/connectors/{connector.pk}/")
    page.click(".tabs >> text=Dashboard")
    wait_for_charts(page)
    assert_no_horizontal_scroll(page, viewport)
    assert_accessible(page)
    # Legends sit above their plot: no legend box overlaps its plot area.
    # A chart of one series (cost over time) draws no legend, so it has nothing to overlap.
    overlaps = page.evaluate("""() => [...document.querySelectorAll('[data-plotly-figure]')]
        .filter(chart => chart.querySelector('.legend')).map(chart => {
        const legend = chart.querySelector('.legend').getBoundingClientRect();
        const plot = chart.querySelector('.cartesianlayer .bg, .bglayer rect').getBoundingClientRect();
        return legend.bottom > plot.top + 1 && legend.top < plot.bottom;
    })""")
    assert overlaps and not any(overlaps), overlaps

    note = page.locator("[data-role-note]")
    assert note.get_attribute("open") is not None
    page.click("[data-role-note] summary")
    # The note's "toggle" event, which stores the choice, fires after the click: wait for it before reloading.
    page.wait_for_function(f"localStorage.getItem('{NOTE_KEY}') === 'true'")
    page.reload()
    assert page.locator("[data-role-note]").get_attribute("open") is None
    page.goto(f"{live_server.url}/usage/")
    assert page.locator("[data-role-note]").get_attribute("open") is None
    assert_accessible(page)
    page.click("[data-role-note] summary")
    page.wait_for_function(f"localStorage.getItem('{NOTE_KEY}') === 'false'")
    page.reload()
    assert page.locator("[data-role-note]").get_attribute("open") is not None
    assert not page.console_errors, page.console_errors


def test_a_range_error_is_shown_on_the_range_form(page, live_server, analyst, make_connector):
    connector = make_connector(name="Ranged")
    log_in_via(page, f"{live_server.url}/usage/connectors/{connector.pk}/", analyst)
    page.fill("#range-from", "2025-03-02T00:00")
    page.fill("#range-to", "2025-03-01T00:00")
    page.click("[data-range-form] button[type=submit]")
    page.wait_for_url("**from=2025-03-02**")
    assert "the start must be before the end" in page.inner_text("[data-range-error]")
    assert page.locator("h1").inner_text().startswith("Token usage")
    assert_accessible(page)


def test_the_small_pages_pass_axe(page, live_server, outsider, operator):
    page.goto(f"{live_server.url}/accounts/login/")
    assert_accessible(page)
    log_in(page, live_server, outsider)
    assert_accessible(page)  # the home page of a user without a role
    response = page.goto(f"{live_server.url}/connectors/")
    assert response.status == 403 and "connectors.view_connector" in page.inner_text("main")
    assert_accessible(page)
    page.goto(f"{live_server.url}/accounts/password_change/")
    assert page.locator("nav a[aria-current=page]").inner_text() == "Change password"
    assert_accessible(page)
    page.fill("#id_old_password", "wrong")
    page.fill("#id_new_password1", "x")
    page.fill("#id_new_password2", "y")
    page.click("button[type=submit]")
    assert_accessible(page)


def test_the_skip_link_moves_focus_to_the_content(page, live_server, operator):
    log_in(page, live_server, operator)
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip-link"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    assert re.search(r"#main$", page.url)


def test_the_overview_charts_per_user_and_filters_kept_in_the_links(page, live_server, analyst, make_connector, viewport):
    first, second = make_connector(name="First"), make_connector(name="Second")
    now = timezone.now()
    record(now - timedelta(hours=2), connector_id=first.pk, user_name="alice", prompt_tokens=100, completion_tokens=10)
    record(now - timedelta(hours=2), connector_id=second.pk, user_name="alice", prompt_tokens=50, completion_tokens=5)
    record(now - timedelta(hours=1), connector_id=second.pk, user_name="bob", prompt_tokens=7, completion_tokens=1)
    key, _ = create_api_key(analyst, "nightly batch")
    record(now - timedelta(hours=3), connector_id=second.pk, user_name="alice", prompt_tokens=20, completion_tokens=2,
           api_key=key)
    log_in_via(page, f"{live_server.url}/usage/", analyst)
    for chart_id in ("chart-user-prompt-completion", "chart-user-total"):
        page.locator(f"#{chart_id}[data-rendered=true] svg.main-svg").first.wait_for()
    assert_no_horizontal_scroll(page, viewport)
    assert_accessible(page)
    page.fill("#slice-user", "alice")
    page.click("[data-slice-form] button[type=submit]")
    page.wait_for_url("**user=alice**")
    assert "alice" in page.inner_text("[data-slice-label]")
    page.click("[data-range='24h']")
    page.wait_for_url("**range=24h**")
    assert "user=alice" in page.url
    page.click("text=Second")
    page.wait_for_url(f"**/usage/connectors/{second.pk}/**")
    assert "user=alice" in page.url and page.inner_text("[data-total=total_tokens]") == "77"
    # Sliced by API key as well: only the calls alice made with it.
    page.select_option("#slice-api-key", str(key.pk))
    page.click("[data-slice-form] button[type=submit]")
    page.wait_for_url(f"**api_key={key.pk}**")
    assert page.inner_text("[data-total=total_tokens]") == "22"
    assert "nightly batch" in page.inner_text("[data-slice-label]") and "user=alice" in page.url
    assert_accessible(page)
    assert not page.console_errors, page.console_errors
