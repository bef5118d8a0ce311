"""An alert channel's target is a secret (a Slack webhook's path is its token): stored encrypted, shown on every page,
form, record and log line as its scheme and host only, and still delivered to in full (README, "Alerts")."""

import logging

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from connectors.audit.models import AuditRecord
from tests.servers.webhook_receiver import Receiver
from usage.governance import alerts
from usage.governance.models import AlertChannel, AlertDelivery, ChannelKind, DeliveryStatus
from usage.governance.webhooks import shown_webhook_url

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = "XyZ9tOkEn4sEcReT"
SLACK = f"https://hooks.slack.com/services/T0AAA1111/B0BBB2222/{TOKEN}"
SHOWN = "https://hooks.slack.com/…"


def leaks(text: str) -> bool:
    """Whether ``text`` holds any part of the webhook's path."""
    return any(part in text for part in (TOKEN, "T0AAA1111", "B0BBB2222", "/services/T"))


@pytest.fixture
def slack(db) -> AlertChannel:
    channel = AlertChannel(name="Team Slack", kind=ChannelKind.WEBHOOK, target=SLACK)
    channel.set_secret("whsec-signing")
    channel.save()
    return channel


@pytest.fixture
def receiver():
    made = []

    def make(**options):
        made.append(Receiver(**options))
        return made[-1]

    yield make
    for r in made:
        r.close()


@pytest.mark.parametrize(("url", "shown"), [
    (SLACK, SHOWN),
    ("https://example.com", "https://example.com/"),
    ("https://example.com/", "https://example.com/"),
    ("https://example.com/?token=abc", "https://example.com/…"),
    ("https://example.com/#abc", "https://example.com/…"),
    ("http://user:pw@Hooks.Example.com:8443/abc", "http://hooks.example.com:8443/…"),
    ("http://[2001:db8::1]:8000/abc", "http://[2001:db8::1]:8000/…"),
    ("http://host:99999999/abc", "…"),
    ("ftp://example.com/abc", "…"),
    ("not a url", "…"),
])
def test_a_webhook_url_is_shown_as_its_scheme_host_and_port(url, shown):
    assert shown_webhook_url(url) == shown


def test_the_target_is_stored_encrypted_and_read_back_whole(slack):
    with connection.cursor() as cursor:
        cursor.execute("SELECT target_encrypted FROM governance_alertchannel")
        (stored,) = cursor.fetchone()
    assert not leaks(stored) and "hooks.slack.com" not in stored
    assert AlertChannel.objects.get().target == SLACK
    assert AlertChannel.objects.get().target_shown == SHOWN


def test_the_alerts_page_shows_scheme_and_host_only(client, connector_admin, slack):
    client.force_login(connector_admin)
    html = client.get("/usage/alerts/").content.decode()
    assert SHOWN in html and not leaks(html)


def test_an_email_channel_shows_its_addresses(client, connector_admin):
    AlertChannel.objects.create(name="Ops", kind=ChannelKind.EMAIL, target="ops@example.com, lead@example.com")
    client.force_login(connector_admin)
    assert "ops@example.com, lead@example.com" in client.get("/usage/alerts/").content.decode()


def test_the_edit_page_never_renders_the_url_and_blank_keeps_it(client, connector_admin, slack):
    client.force_login(connector_admin)
    url = f"/usage/alerts/channels/{slack.pk}/edit/"
    html = client.get(url).content.decode()
    assert f"Now {SHOWN}" in html and not leaks(html)
    stored = slack.target_encrypted
    response = client.post(url, {"name": "Renamed", "kind": "webhook", "target": "", "enabled": "on", "secret": ""})
    assert response.status_code == 302
    slack.refresh_from_db()
    assert (slack.name, slack.target, slack.target_encrypted) == ("Renamed", SLACK, stored)
    assert slack.secret == "whsec-signing"


def test_a_new_url_replaces_the_old_one(client, connector_admin, slack):
    client.force_login(connector_admin)
    new = SLACK.replace(TOKEN, "AnotherToken42")
    client.post(f"/usage/alerts/channels/{slack.pk}/edit/",
                {"name": "Team Slack", "kind": "webhook", "target": new, "enabled": "on", "secret": ""})
    slack.refresh_from_db()
    assert slack.target == new


def test_a_form_sent_back_with_an_error_does_not_echo_the_url(client, connector_admin):
    client.force_login(connector_admin)
    response = client.post("/usage/alerts/channels/new/", {"name": "Private", "kind": "webhook",
                                                          "target": f"http://10.0.0.5/services/T0AAA1111/{TOKEN}",
                                                          "enabled": "on", "secret": ""})
    assert response.status_code == 200 and response.context["form"].errors["target"]
    assert not leaks(response.content.decode())
    assert not AlertChannel.objects.exists()


def test_a_url_typed_as_an_email_address_is_not_quoted_back(client, connector_admin):
    client.force_login(connector_admin)
    response = client.post("/usage/alerts/channels/new/", {"name": "Oops", "kind": "email", "target": SLACK,
                                                          "enabled": "on", "secret": ""})
    assert "A URL is not an email address" in response.context["form"].errors["target"][0]
    assert not leaks(response.content.decode())


def test_changing_the_kind_needs_a_new_target_and_quotes_no_url(client, connector_admin, slack):
    client.force_login(connector_admin)
    response = client.post(f"/usage/alerts/channels/{slack.pk}/edit/",
                           {"name": "Team Slack", "kind": "email", "target": "", "enabled": "on", "secret": ""})
    assert response.status_code == 200
    assert "The kind changed: give the new target." in response.context["form"].errors["target"]
    assert not leaks(response.content.decode())
    slack.refresh_from_db()
    assert (slack.kind, slack.target) == (ChannelKind.WEBHOOK, SLACK)


def test_a_new_channel_needs_a_target(client, connector_admin):
    client.force_login(connector_admin)
    response = client.post("/usage/alerts/channels/new/", {"name": "Empty", "kind": "webhook", "target": "",
                                                          "enabled": "on", "secret": ""})
    assert response.context["form"].errors["target"] == ["Give the email addresses or the webhook URL."]


def test_the_audit_trail_records_no_part_of_the_url(client, connector_admin, slack):
    client.force_login(connector_admin)
    client.post(f"/usage/alerts/channels/{slack.pk}/edit/", {"name": "Team Slack", "kind": "webhook",
                                                            "target": SLACK.replace(TOKEN, "AnotherToken42"),
                                                            "enabled": "on", "secret": ""})
    found = list(AuditRecord.objects.filter(object_type="alert_channel").order_by("id"))
    assert [record.changes.get("target_encrypted") for record in found] == ["Target set", "Target changed"]
    assert not any(leaks(repr(vars(record))) or "AnotherToken42" in repr(vars(record)) for record in found)


def test_the_delivery_goes_to_the_full_url_while_page_and_log_show_none_of_it(client, connector_admin, receiver,
                                                                            actions_config, caplog):
    actions_config({"allowedHosts": ["*", "127.0.0.1"]})
    hook = receiver(failures=1)
    url = f"http://127.0.0.1:{hook.port}/services/T0AAA1111/B0BBB2222/{TOKEN}?key={TOKEN}"
    client.force_login(connector_admin)
    assert client.post("/usage/alerts/channels/new/", {"name": "Hook", "kind": "webhook", "target": url,
                                                      "enabled": "on", "secret": ""}).status_code == 302
    alerts.raise_alert("budget:9:p:threshold", "budget_threshold", "80% of Team used")
    with caplog.at_level(logging.DEBUG):
        assert alerts.send_due_deliveries() == 0  # the receiver fails the first attempt
        delivery = AlertDelivery.objects.get()
        AlertDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=delivery.next_attempt_at.replace(year=2000))
        assert alerts.send_due_deliveries() == 1
    assert hook.paths == [f"/services/T0AAA1111/B0BBB2222/{TOKEN}?key={TOKEN}"] * 2
    assert AlertDelivery.objects.get().status == DeliveryStatus.SENT
    assert "127.0.0.1" in caplog.text and not leaks(caplog.text)  # the failure was logged, by host and port
    html = client.get("/usage/alerts/").content.decode()
    assert f"http://127.0.0.1:{hook.port}/…" in html and not leaks(html)


def test_a_target_the_keys_cannot_read_fails_its_delivery_with_a_clear_log_and_can_be_typed_again(
        client, connector_admin, settings, slack, caplog):
    settings.CONNECTORS_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    alerts.raise_alert("k", "error_rate", "m")
    assert alerts.send_due_deliveries() == 0
    assert "cannot be decrypted with the configured CONNECTORS_ENCRYPTION_KEYS" in caplog.text
    client.force_login(connector_admin)
    assert "cannot be decrypted" in client.get("/usage/alerts/").content.decode()
    url = f"/usage/alerts/channels/{slack.pk}/edit/"
    form = {"name": "Team Slack", "kind": "webhook", "target": "", "enabled": "on", "secret": "whsec-new"}
    response = client.post(url, form)
    assert "cannot be decrypted" in response.context["form"].errors["target"][0]
    assert client.post(url, {**form, "target": SLACK}).status_code == 302
    assert AlertChannel.objects.get().target == SLACK


def test_rotation_reencrypts_the_target_and_the_signing_secret(settings, slack, capsys):
    before = (slack.target_encrypted, slack.secret_encrypted)
    new_key = Fernet.generate_key().decode()
    settings.CONNECTORS_ENCRYPTION_KEYS = [new_key, *settings.CONNECTORS_ENCRYPTION_KEYS]
    call_command("rotate_connector_keys")
    assert "Re-encrypted 2 secret(s); 0 already used the newest key." in capsys.readouterr().out
    settings.CONNECTORS_ENCRYPTION_KEYS = [new_key]  # the old key can now be dropped
    slack.refresh_from_db()
    assert (slack.target_encrypted, slack.secret_encrypted) != before
    assert (slack.target, slack.secret) == (SLACK, "whsec-signing")
    record = AuditRecord.objects.filter(object_type="alert_channel", action="update").get()
    assert record.changes["target_encrypted"] == "Target re-encrypted under the newest encryption key (unchanged)"


def test_the_migration_encrypts_existing_targets_and_going_back_decrypts_them():
    executor = MigrationExecutor(connection)
    executor.migrate([("governance", "0006_spaces")])
    old_state = executor.loader.project_state([("governance", "0006_spaces")])
    OldChannel = old_state.apps.get_model("governance", "AlertChannel")
    OldChannel.objects.create(name="Old Slack", kind="webhook", target=SLACK)
    executor.loader.build_graph()
    executor.migrate([("governance", "0007_alert_channel_target_encrypted")])
    channel = AlertChannel.objects.get(name="Old Slack")
    assert channel.target == SLACK and not leaks(channel.target_encrypted)
    executor.loader.build_graph()
    executor.migrate([("governance", "0006_spaces")])
    with connection.cursor() as cursor:
        cursor.execute("SELECT target FROM governance_alertchannel")
        assert cursor.fetchall() == [(SLACK,)]
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())
    assert AlertChannel.objects.get(name="Old Slack").target == SLACK
