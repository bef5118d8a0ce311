"""Every page, as every role: no template text, no "None" shown as a value, no connector id where its name exists.

The URLs come from the URL patterns themselves (tests/helpers/site_tour.py), so a new page is checked without
being listed here."""

import html
import re

import pytest

from tests.conftest import PASSWORD
from tests.helpers.site_tour import ROLES, make_role_users, page_urls, populate

pytestmark = pytest.mark.django_db

TEMPLATE_TEXT = ("{#", "#}", "{%", "{{")
UUID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")


def visible_text(page: str, *, code: bool = True) -> str:
    """What a reader sees: no scripts, styles, tags or attributes; without ``code``, no code either (an id in a
    snippet or a URL to copy is meant to be there)."""
    page = re.sub(r"<(script|style|template)\b.*?</\1>", " ", page, flags=re.S | re.I)
    if not code:
        page = re.sub(r"<(pre|code)\b.*?</\1>", " ", page, flags=re.S | re.I)
    page = re.sub(r"<!--.*?-->", " ", page, flags=re.S)
    text = re.sub(r"<[^>]+>", " ", page)
    return html.unescape(text)


def text_defects(text: str, *, names_for_ids: dict[str, str], prose: str | None = None) -> list[str]:
    """What is wrong in a page's ``text``; ids are looked for in ``prose`` (the text without code) when given."""
    defects = [f"template text {marker!r}" for marker in TEMPLATE_TEXT if marker in text]
    if "Api key" in text:
        defects.append("'Api key': a field's name capitalised by Django, not written for people")
    for match in re.finditer(r"\bNone\b", text):
        defects.append(f"'None' shown: …{text[max(0, match.start() - 40):match.end() + 20]!r}…")
    for match in UUID.finditer(text if prose is None else prose):
        if match.group() in names_for_ids:
            defects.append(f"the id {match.group()} shown where its name ({names_for_ids[match.group()]}) exists")
    return defects


@pytest.fixture
def tour(django_user_model):
    return populate(make_role_users(django_user_model, PASSWORD))


def test_the_site_tour_reaches_every_page(tour):
    urls = page_urls(tour)
    for expected in ("/connectors/", f"/connectors/{tour.connector.pk}/logs/", "/usage/", "/usage/me/",
                     "/usage/budgets/", "/audit/", f"/usage/budgets/{tour.objects['budget'].pk}/edit/"):
        assert expected in urls


@pytest.mark.parametrize("role", list(ROLES))
def test_no_page_shows_template_text_none_or_ids(client, tour, role):
    client.force_login(tour.users[role])
    names = {tour.connector.pk: tour.connector.name, tour.objects["spare"].pk: tour.objects["spare"].name}
    problems = []
    for url in [*page_urls(tour), "/admin/"]:
        response = client.get(url, follow=True)
        if not response.get("Content-Type", "").startswith("text/html"):
            continue
        page = response.content.decode()
        if url == "/admin/" and response.status_code == 200:
            page = page.replace("None available", "")  # Django's admin's own wording for an empty history
        defects = text_defects(visible_text(page), names_for_ids=names, prose=visible_text(page, code=False))
        problems += [f"{url} ({response.status_code}): {defect}" for defect in defects]
    assert not problems, "\n".join(problems)


def test_the_checks_catch_what_they_look_for():
    defects = text_defects("{# a comment #} Api key: None x-1", names_for_ids={})
    assert len(defects) == 4
    uid = "0b0e8d4c-1c1f-4f55-9a57-52d1e0c1a111"
    assert text_defects(f"Connector {uid}", names_for_ids={uid: "Support"})
    assert not text_defects("Nonesuch", names_for_ids={})


def test_the_admins_event_page_names_its_fields_in_words(client, tour):
    client.force_login(tour.users["admin"])
    event = tour.objects["event"]  # a failure without an API key
    page = visible_text(client.get(f"/admin/usage/executionevent/{event.pk}/change/").content.decode())
    assert "API key" in page and "Api key" not in page
    assert not text_defects(page, names_for_ids={}), text_defects(page, names_for_ids={})


def test_form_labels_spell_api_key_as_people_do(client, tour):
    client.force_login(tour.users["admin"])
    for url in ("/usage/budgets/new/", "/usage/rate-limits/new/"):
        page = visible_text(client.get(url).content.decode())
        assert "API key" in page and "Api key" not in page


def test_the_audit_trail_names_connectors_and_folds_long_changes(client, tour):
    client.force_login(tour.users["auditor"])
    page = client.get("/audit/").content.decode()
    assert "<dt>Connector</dt><dd>Support assistant</dd>" in page  # a budget's connector_id, by name
    assert "connector_id" not in visible_text(page) and "sign_in" not in visible_text(page)
    assert "<summary>14 fields</summary>" in page  # a budget's creation (its space included), folded
