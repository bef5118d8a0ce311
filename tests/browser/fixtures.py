"""Browser fixtures: Debian's Chromium driven by Playwright (its own browser download cannot work here).

Use the ``page`` fixture with pytest-django's ``live_server``; ``log_in(page, live_server, user)`` logs in through
the real form. Screenshots go to test-artifacts/.
"""

import functools
import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import PASSWORD

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


# Module scope: Playwright's sync API keeps an event loop running in this thread while it is open, which would
# break later tests that call asyncio.run().
@pytest.fixture(scope="module")
def chromium():
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.fail("Chromium is not installed: `make test` installs Debian's chromium package")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop running in this thread; the ORM calls that tests make alongside
    # it are ordinary synchronous calls, so tell Django not to mistake them for calls from async code.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()
    if previous is None:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    else:
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def page(chromium, live_server):
    context = chromium.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.console_errors = []
    page.on("console", lambda message: message.type == "error" and page.console_errors.append(message.text))
    page.on("pageerror", lambda error: page.console_errors.append(str(error)))
    yield page
    context.close()


def log_in(page, live_server, user, password: str = PASSWORD) -> None:
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("#id_username", user.get_username())
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    page.wait_for_load_state()


# axe-core's impact levels that fail a test; "moderate" and "minor" findings are reported by axe but not gated.
BLOCKING_IMPACTS = ("serious", "critical")


# The axe-core rules whose outcome depends on how the page is laid out (colours over what is behind the text, the
# size of targets, what overflows): all a page needs checked again at another width, its markup being the same.
LAYOUT_RULES = ("color-contrast", "link-in-text-block", "target-size", "scrollable-region-focusable")


@functools.cache
def _axe_script() -> str:
    from axe_playwright_python.sync_playwright import Axe

    return Axe().axe_script


def assert_accessible(page, rules: tuple[str, ...] | None = None) -> None:
    """Run axe-core (bundled in axe-playwright-python: nothing is downloaded) on the page as it is now, every rule
    or only ``rules`` (WCAG 2.2's target size included); fail on any serious or critical violation, naming the rule and the elements. The script is
    put in a page once (a second run on the same page reuses it)."""
    # axe-core leaves WCAG 2.2's target size (2.5.8, level AA) off by default; these pages are used on phones.
    options = {"resultTypes": ["violations"], "rules": {"target-size": {"enabled": True}}}
    if rules:
        options["runOnly"] = {"type": "rule", "values": list(rules)}
    if not page.evaluate("typeof window.axe === 'object'"):
        page.evaluate(_axe_script())
    violations = page.evaluate("options => axe.run(document, options)", options)["violations"]
    blocking = [v for v in violations if v.get("impact") in BLOCKING_IMPACTS]
    report = "\n".join(
        f"{v['id']} ({v['impact']}): {v['help']} -> {[node['target'] for node in v['nodes']][:5]}" for v in blocking
    )
    assert not blocking, f"axe on {page.url}:\n{report}"


def page_width(page) -> int:
    """How wide the page's content is: wider than the viewport means a horizontal scroll bar."""
    return page.evaluate("document.documentElement.scrollWidth")


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
