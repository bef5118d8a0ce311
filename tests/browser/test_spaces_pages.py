"""In Chromium, at 1366 px and 375 px: a superuser creates a space on the Spaces page and grants a role in it; the
team member's header switcher lists that space only and leads to its dashboard, which sums the space's connectors.
axe runs on each page (tests/browser/fixtures.py)."""

import pytest
from django.utils import timezone

from connectors.models import Connector, Provider
from connectors.spaces.models import Space
from tests.browser.fixtures import assert_accessible, log_in, page_width
from tests.conftest import make_user
from tests.helpers.events import record

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture(params=[{"width": 1366, "height": 900}, {"width": 375, "height": 800}], ids=["1366px", "375px"])
def sized_page(page, request):
    page.set_viewport_size(request.param)
    return page


def test_spaces_page_switcher_and_space_dashboard(sized_page, live_server, admin_user, django_user_model):
    page = sized_page
    width = page.viewport_size["width"]
    log_in(page, live_server, admin_user)
    page.goto(f"{live_server.url}/spaces/")
    assert_accessible(page)
    form = page.locator("[data-space-form]")
    form.locator("#id_id").fill("marketing")
    form.locator("#id_name").fill("Marketing team")
    form.locator("button[type=submit]").click()
    page.wait_for_load_state()
    assert "Space “Marketing team” created" in page.content()
    member = make_user(django_user_model, "mara")
    grant_form = page.locator('[data-grant-form="marketing"]')
    grant_form.locator("select[name=role]").select_option("Usage viewers")
    grant_form.locator("input[name=principal]").fill("mara")
    grant_form.locator("button[type=submit]").click()
    page.wait_for_load_state()
    assert "Granted Usage viewers in Marketing team" in page.content()
    assert page_width(page) <= width + 1

    connector = Connector(name="Campaign writer", provider=Provider.OTHER, api_url="https://llm.example/v1",
                          default_model="m", space=Space.objects.get(pk="marketing"))
    connector.save()
    record(timezone.now(), connector_id=connector.pk, connector_name="Campaign writer", prompt_tokens=4321,
           space_id="marketing")

    page.context.clear_cookies()
    log_in(page, live_server, member)
    page.goto(f"{live_server.url}/s/marketing/usage/")
    switcher = page.locator("[data-space-switcher]")
    assert "Marketing team" in switcher.locator("summary").inner_text()
    switcher.locator("summary").click()
    items = switcher.locator(".space-menu a")
    assert items.count() == 1 and "Marketing team" in items.first.inner_text()  # not the default space: no role
    assert_accessible(page)
    items.first.click()
    # The space's home sends a usage viewer to the space's dashboard: the redirect stays inside the space.
    page.wait_for_url(f"{live_server.url}/s/marketing/usage/")
    assert "Campaign writer" in page.content()
    assert_accessible(page)
    assert page_width(page) <= width + 1
