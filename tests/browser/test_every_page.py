"""Every page, as every role, at a laptop's and a phone's width, in Chromium: axe-core finds nothing serious or
critical, no template text is shown, the page is no wider than the screen, and at 1366 px no table is wider than
the box that holds it (its key columns visible without a sideways scroll).

The pages are every URL pattern filled with real objects (tests/helpers/site_tour.py), as in
tests/pages/test_every_page.py, which checks the HTML's text for every role without a browser."""

import pytest

from tests.browser.fixtures import LAYOUT_RULES, assert_accessible, log_in, page_width
from tests.conftest import PASSWORD
from tests.helpers.site_tour import ROLES, make_role_users, page_urls, populate

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

LAPTOP = {"width": 1366, "height": 900}
PHONE = {"width": 375, "height": 812}
TEMPLATE_TEXT = ("{#", "#}", "{%", "{{")
# Django's admin: its index and a change list and form (a 403 page for accounts that are not staff).
ADMIN_PAGES = ["/admin/", "/admin/usage/executionevent/", "/admin/connectors/connector/"]

# Each table's width against its container's (the .table-wrap, or the parent): more than a pixel wider means
# a sideways scroll to reach its last columns. The product's pages (main.page); Django's admin keeps its own
# layout, where a change list scrolls beside its filters.
WIDE_TABLES = """() => [...document.querySelectorAll('main.page table')].filter(t => t.offsetParent !== null).map(t => {
  const box = t.closest('.table-wrap') || t.parentElement;
  return {table: t.className || t.id || 'table', width: Math.round(t.getBoundingClientRect().width),
          box: Math.round(box.clientWidth)};
}).filter(m => m.width > m.box + 1)"""


def width_problems(page, where: str, viewport: dict, rules: tuple[str, ...] | None = None) -> list[str]:
    """What is wrong with the page as it is shown now, at ``viewport``'s width (axe-core: every rule, or ``rules``)."""
    text = page.evaluate("document.body ? document.body.innerText : ''")
    problems = [f"{where}: template text {marker!r}" for marker in TEMPLATE_TEXT if marker in text]
    if page_width(page) > viewport["width"]:
        problems.append(f"{where}: the page is {page_width(page)} px wide")
    if viewport is LAPTOP:
        problems += [f"{where}: table {m['table']} is {m['width']} px wide in a {m['box']} px box"
                     for m in page.evaluate(WIDE_TABLES)]
    try:
        assert_accessible(page, rules)
    except AssertionError as exc:
        problems.append(f"{where}: {exc}")
    return problems


def tour_problems(page, live_server, tour, role: str) -> list[str]:
    """Each page is opened once, at the phone's width (the page's script marks what scrolls sideways then, as on
    a phone), checked, then widened to the laptop's and checked again: the layout follows the window (CSS and the
    charts' own resizing), which is what a person widening the window sees."""
    log_in(page, live_server, tour.users[role], PASSWORD)
    problems = []
    for url in [*page_urls(tour), *ADMIN_PAGES]:
        if page.request.get(f"{live_server.url}{url}", max_redirects=0).status == 405:
            continue  # a form's target that only takes POST (bulk delete, the test panel): no page to show
        page.set_viewport_size(PHONE)
        page.goto(f"{live_server.url}{url}")
        page.wait_for_load_state("load")
        problems += width_problems(page, f"{url} ({role}, 375 px)", PHONE)
        page.set_viewport_size(LAPTOP)
        problems += width_problems(page, f"{url} ({role}, 1366 px)", LAPTOP, LAYOUT_RULES)
    return problems


@pytest.mark.parametrize("role", list(ROLES))
def test_every_page_as_every_role_at_a_phones_and_a_laptops_width(page, live_server, django_user_model, role):
    tour = populate(make_role_users(django_user_model, PASSWORD))
    problems = tour_problems(page, live_server, tour, role)
    assert not problems, "\n".join(problems)
