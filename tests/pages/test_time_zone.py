"""The viewer's time zone (connectors/viewer_time_zone.py): chosen once, remembered, used by every page, kept by
the tabs' links; one format for every moment (24-hour, the zone named, no microseconds)."""

import datetime as dt
import re

import pytest

from tests.helpers.events import record

pytestmark = pytest.mark.django_db


def test_a_chosen_zone_is_remembered_and_used_by_the_other_pages(client, connector_admin, make_connector):
    connector = make_connector(name="Zoned")
    record(dt.datetime(2026, 7, 1, 10, 30, tzinfo=dt.UTC), connector_id=connector.pk)
    client.force_login(connector_admin)
    logs = client.get(f"/connectors/{connector.pk}/logs/?range=custom&from=2026-07-01&to=2026-07-02&tz=Asia/Tokyo")
    assert logs.cookies["tz"].value == "Asia/Tokyo"
    page = logs.content.decode()
    assert "19:30:00" in page  # 10:30 UTC in Tokyo
    # The tabs keep the range and the zone.
    assert f'href="/usage/connectors/{connector.pk}/?range=custom&amp;from=2026-07-01&amp;to=2026-07-02&amp;tz=Asia%2FTokyo"' in page
    # Without ?tz=, the remembered zone: on the dashboards and on every other page's times.
    dashboard = client.get(f"/usage/connectors/{connector.pk}/").content.decode()
    assert "Asia/Tokyo" in dashboard
    listed = client.get("/connectors/").content.decode()
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d JST", listed)


def test_an_unknown_zone_is_not_remembered(client, connector_admin):
    client.force_login(connector_admin)
    response = client.get("/connectors/?tz=../../etc/passwd")
    assert "tz" not in response.cookies
    client.cookies["tz"] = "Not/AZone"
    assert 'data-tz="UTC"' in client.get("/connectors/").content.decode()


def test_one_format_for_moments():
    from django.utils import timezone

    from connectors.templatetags.moments import when

    moment = dt.datetime(2026, 1, 2, 15, 4, 5, 123456, tzinfo=dt.UTC)
    with timezone.override("Europe/Paris"):
        assert when(moment) == "2026-01-02 16:04 CET"
        assert when(moment, "seconds") == "2026-01-02 16:04:05 CET"
    assert when(None) == "—"
