"""End to end in Chromium: log in, create a connector, see it listed; run the test tab."""

import json

import pytest

from tests.browser.fixtures import assert_accessible, log_in, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_an_admin_logs_in_creates_a_connector_and_sees_it_listed(page, live_server, connector_admin, fake_openai):
    log_in(page, live_server, connector_admin)
    page.click("text=Create your first connector")
    page.fill("#id_name", "Browser-made connector")
    page.select_option("#id_provider", "Other")
    # Choosing a provider offers its default URL; an OpenAI-compatible server also needs a model.
    assert page.input_value("#id_api_url") == "http://localhost:11434/v1/chat/completions"
    assert page.is_hidden("#id_organization_id")
    page.fill("#id_api_url", fake_openai.url("ok"))
    page.fill("#id_default_model", "llama3.2")
    page.fill("#id_api_key", "sk-browser-SECRET")
    page.click("button:text-is('Save')")
    page.wait_for_url("**/connectors/*/")
    assert "Connector “Browser-made connector” created." in page.inner_text(".messages")
    page.click("text=Connectors")
    row = page.locator("table tr", has_text="Browser-made connector")
    assert "Other (OpenAI-compatible)" in row.inner_text() and "llama3.2" in row.inner_text()
    assert "sk-browser-SECRET" not in page.content()
    screenshot(page, "connector-list")
    assert_accessible(page)
    assert not page.console_errors


def test_the_provider_choice_shows_the_fields_that_apply(page, live_server, connector_admin):
    # Azure keeps the default model (Kibana sends it behind API Management and proxies),
    # and the Other-only keys (verification mode, PKI files) show for Other only.
    log_in(page, live_server, connector_admin)
    page.goto(f"{live_server.url}/connectors/new/")
    page.select_option("#id_provider", "Azure OpenAI")
    # The Azure shape has parts only the user knows: a placeholder, not a value that would save unchanged.
    assert page.input_value("#id_api_url") == ""
    assert "/openai/deployments/{deployment}/" in page.get_attribute("#id_api_url", "placeholder")
    page.fill("#id_api_url", "https://res.openai.azure.com/openai/deployments/gpt4/chat/completions?api-version=1")
    page.dispatch_event("#id_api_url", "input")
    # As in Kibana, an Azure connector takes a default model with a deployments URL too (API Management, proxies).
    assert page.is_visible("#id_default_model")
    page.fill("#id_api_url", "https://res.openai.azure.com/openai/v1/chat/completions")
    page.dispatch_event("#id_api_url", "input")
    assert page.is_visible("#id_default_model")
    assert page.is_hidden("#id_verification_mode") and page.is_hidden("#id_certificate_file")
    page.select_option("#id_provider", "Other")
    assert page.is_visible("#id_verification_mode") and page.is_visible("#id_certificate_file")
    assert page.is_visible("#id_timeout_ms") and page.is_visible("#id_temperature")


def test_the_test_tab_runs_and_shows_the_response_or_the_error(page, live_server, operator, make_connector, fake_openai):
    connector = make_connector(name="Tested", api_url=fake_openai.url("ok"))
    log_in(page, live_server, operator)
    page.goto(f"{live_server.url}/connectors/{connector.pk}/")
    assert json.loads(page.input_value("#test-body")) == {"messages": [{"role": "user", "content": "Hello world"}]}
    page.click("[data-test-run]")
    result = page.locator("[data-test-result].ok")
    result.wait_for()
    assert "Succeeded in" in page.inner_text("[data-test-summary]")
    assert "tokens: 9 prompt + 9 completion = 18" in page.inner_text("[data-test-summary]")
    assert '"object": "chat.completion"' in page.inner_text("[data-test-output]")
    screenshot(page, "test-tab-ok")
    assert_accessible(page)

    requests_before = len(fake_openai.requests)
    page.fill("#test-body", '{"messages": [oops')
    page.click("[data-test-run]")
    page.locator("[data-test-result].failed").wait_for()
    assert "not valid JSON" in page.inner_text("[data-test-summary]")
    assert len(fake_openai.requests) == requests_before
    screenshot(page, "test-tab-bad-json")

    page.fill("#test-body", json.dumps({"messages": [{"role": "user", "content": "hi"}], "model": "x"}))
    connector.api_url = fake_openai.url("status-500")
    connector.save()
    page.click("[data-test-run]")
    page.locator("[data-test-result].failed").wait_for()
    # A locator, not wait_for_function("..."): evaluating a string is eval, which the pages' CSP refuses.
    page.locator("[data-test-output]", has_text="Status code: 500").wait_for()
    assert not page.console_errors


def test_save_and_test_runs_the_test_on_arrival(page, live_server, connector_admin, fake_openai):
    log_in(page, live_server, connector_admin)
    page.goto(f"{live_server.url}/connectors/new/")
    page.fill("#id_name", "Saved and tested")
    page.select_option("#id_provider", "OpenAI")
    page.fill("#id_api_url", fake_openai.url("ok"))
    page.fill("#id_api_key", "sk-x")
    page.click("text=Save and test")
    page.locator("[data-test-result].ok").wait_for()
    assert "Succeeded" in page.inner_text("[data-test-summary]")


# Where each line of an element's text starts, read from the browser's layout: the character before every break.
CHARACTERS_BEFORE_LINE_BREAKS = """(element) => {
    const walker = document.createTreeWalker(element, NodeFilter.SHOW_TEXT);
    const before = [];
    let top = null, previous = "";
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
        for (let i = 0; i < node.length; i++) {
            const range = document.createRange();
            range.setStart(node, i);
            range.setEnd(node, i + 1);
            const rect = range.getClientRects()[0];
            if (!rect) continue;
            if (top !== null && rect.top > top + 2) before.push(previous);
            top = rect.top;
            previous = node.data[i];
        }
    }
    return before;
}"""


@pytest.mark.parametrize("width, height", [(1366, 900), (375, 812)])
def test_long_hosts_in_the_connector_list_wrap_only_between_their_labels(page, live_server, connector_admin,
                                                                         make_connector, width, height):
    hosts = ["my-company-westeurope-production-gpt.openai.azure.com",
             "llm-gateway.platform-engineering.internal.example.com", "api.openai.com"]
    for index, host in enumerate(hosts):
        make_connector(name=f"Customer support assistant, production region {index}",
                       provider="Azure OpenAI" if "azure" in host else "OpenAI",
                       api_url=f"https://{host}/openai/deployments/gpt-4o-mini/chat/completions?api-version=2024-10-21"
                       if "azure" in host else f"https://{host}/v1/chat/completions",
                       default_model="gpt-4o-mini-2024-07-18")
    page.set_viewport_size({"width": width, "height": height})
    log_in(page, live_server, connector_admin)
    page.goto(f"{live_server.url}/connectors/")
    screenshot(page, f"connector-list-long-hosts-{width}")
    for host in hosts:
        cell = page.locator("[data-host]", has_text=host.split(".")[0])
        assert cell.inner_text() == host  # copied as it is, whatever the breaks
        breaks = cell.evaluate(CHARACTERS_BEFORE_LINE_BREAKS)
        assert set(breaks) <= {".", "-"}, f"{host} wraps inside a word at {width} px: after {breaks}"
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    if width == 1366:  # every column shows without a sideways scroll of the table
        wrap = page.locator(".table-wrap")
        assert wrap.evaluate("box => box.scrollWidth") <= wrap.evaluate("box => box.clientWidth") + 1
