"""The README's screenshots (docs/screenshots/), retaken by `python -m bench.screenshots`.

Not collected by `make test` (the file name does not start with test_): bench/screenshots.py runs it by path.
Each page is shown as the role that uses it, with the data of tests/helpers/site_tour.py, at a laptop's width
(1366 px) and a phone's (375 px).
"""

from pathlib import Path

import pytest

from tests.browser.fixtures import log_in
from tests.conftest import PASSWORD
from tests.helpers.site_tour import make_role_users, populate

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

OUT = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
WIDTHS = {"1366": {"width": 1366, "height": 900}, "375": {"width": 375, "height": 812}}


def test_take_the_readme_screenshots(page, live_server, django_user_model):
    tour = populate(make_role_users(django_user_model, PASSWORD))
    connector = tour.connector.pk
    shots = [
        ("connector-list", "connector_admin", "/connectors/"),
        ("logs", "operator", f"/connectors/{connector}/logs/?range=24h"),
        ("dashboard", "analyst", f"/usage/connectors/{connector}/?range=24h"),
        ("audit", "auditor", "/audit/"),
    ]
    OUT.mkdir(parents=True, exist_ok=True)
    for name, role, url in shots:
        page.context.clear_cookies()
        page.set_viewport_size(WIDTHS["1366"])
        log_in(page, live_server, tour.users[role], PASSWORD)
        for width, viewport in WIDTHS.items():
            page.set_viewport_size(viewport)
            page.goto(f"{live_server.url}{url}")
            page.wait_for_load_state("networkidle")
            if page.locator("[data-plotly-figure]").count():
                page.wait_for_selector("[data-plotly-figure][data-rendered]", timeout=20_000)
            # A phone's page is long: the first two screens show what it looks like.
            clip = None if width == "1366" else {"x": 0, "y": 0, "width": viewport["width"], "height": 1600}
            page.screenshot(path=str(OUT / f"{name}-{width}.png"), full_page=True, clip=clip)
