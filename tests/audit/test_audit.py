"""The audit trail: every kind of change and sign-in, each made the way a user makes it and read back from the
trail; the same transaction as the change; append-only; retention; the /audit/ page, its filters, keyset pages
and exports. Runs on SQLite and PostgreSQL (the trigger that keeps the table append-only on PostgreSQL has its
tests in test_audit_append_only.py)."""

import csv
import io
import ipaddress
import json
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group, Permission
from django.core.management import call_command
from django.db import DatabaseError, connection, transaction
from django.urls import reverse
from django.utils import timezone

from connectors.accounts.api_keys import create_api_key
from connectors.audit import sign_ins, trail
from connectors.audit.models import AuditRecord
from connectors.audit.preconfigured import record_preconfigured_changes
from connectors.models import ApiKey, Connector
from tests.api.test_connector_api import create_body
from tests.conftest import PASSWORD, basic_auth, make_user
from tests.pages.test_connector_pages import SECRET, form_data

pytestmark = pytest.mark.django_db

BROWSER = "Mozilla/5.0 (audit test)"


@pytest.fixture
def auditor(django_user_model):
    return make_user(django_user_model, "audrey", "Auditors")


def records(**filters):
    return list(AuditRecord.objects.filter(**filters).order_by("id"))


def only(**filters) -> AuditRecord:
    found = records(**filters)
    assert len(found) == 1, [str(r) for r in found]
    return found[0]


def assert_no_secret(*values):
    text = json.dumps([v.changes if isinstance(v, AuditRecord) else v for v in values], default=str)
    assert SECRET not in text and "sk-new-key" not in text and "sk-test-secret" not in text


# --- connectors, from each place a change can come from -------------------------------------------------------


class TestConnectorPages:
    def test_create_is_recorded_with_who_how_and_from_where(self, client, connector_admin):
        client.force_login(connector_admin)
        client.post(reverse("connectors:create"), form_data(), HTTP_USER_AGENT=BROWSER, REMOTE_ADDR="10.1.2.3")
        connector = Connector.objects.get()
        record = only(object_type="connector", action="create")
        assert record.object_id == connector.pk and record.object_repr == "Production OpenAI"
        assert record.actor == "ada" and record.actor_user_id == connector_admin.pk
        assert record.via == "page" and record.client_ip == "10.1.2.3" and record.user_agent == BROWSER
        assert record.changes["name"] == "Production OpenAI"
        assert record.changes["encrypted_api_key"] == "API key set"
        assert_no_secret(record)

    def test_update_records_a_field_by_field_diff_and_only_that_the_key_changed(self, client, connector_admin, make_connector):
        connector = make_connector(name="Old name", default_model="gpt-4o")
        client.force_login(connector_admin)
        client.post(reverse("connectors:edit", args=[connector.pk]),
                    form_data(name="New name", api_url=connector.api_url, default_model="gpt-4o", api_key="sk-new-key"))
        record = only(object_type="connector", object_id=connector.pk, action="update")
        assert record.changes["name"] == ["Old name", "New name"]
        assert record.changes["encrypted_api_key"] == "API key changed"
        assert "default_model" not in record.changes and "api_url" not in record.changes
        assert_no_secret(record)

    def test_saving_without_a_change_writes_no_record(self, client, connector_admin, make_connector):
        connector = make_connector(name="Production OpenAI", default_model="gpt-4o-mini")
        client.force_login(connector_admin)
        client.post(reverse("connectors:edit", args=[connector.pk]), form_data(api_key=""))
        assert records(object_type="connector", action="update") == []

    def test_delete_is_recorded_with_what_was_deleted(self, client, connector_admin, make_connector):
        connector = make_connector(name="Doomed")
        client.force_login(connector_admin)
        client.post(reverse("connectors:delete", args=[connector.pk]))
        record = only(object_type="connector", object_id=connector.pk, action="delete")
        assert record.changes["name"] == "Doomed" and record.actor == "ada"


class TestConnectorApi:
    def test_create_update_delete_through_kibanas_api(self, client, connector_admin):
        auth = {"HTTP_AUTHORIZATION": basic_auth(connector_admin), "HTTP_USER_AGENT": "kibana-script/1.0",
                "HTTP_KBN_XSRF": "true"}
        created = client.post("/api/actions/connector/audited", json.dumps(create_body()),
                              content_type="application/json", **auth).json()
        client.put("/api/actions/connector/audited",
                   json.dumps({"name": "Renamed", "config": create_body()["config"], "secrets": {"apiKey": "sk-new-key"}}),
                   content_type="application/json", **auth)
        client.delete("/api/actions/connector/audited", **auth)
        create, update, delete = records(object_type="connector", object_id=created["id"])
        assert [create.action, update.action, delete.action] == ["create", "update", "delete"]
        assert {r.via for r in (create, update, delete)} == {"api"}
        assert {r.actor for r in (create, update, delete)} == {"ada"}
        assert update.changes["name"] == ["My OpenAI", "Renamed"]
        assert update.changes["encrypted_api_key"] == "API key changed"
        assert create.user_agent == "kibana-script/1.0"
        assert_no_secret(create, update, delete)

    def test_a_change_made_with_an_api_key_names_the_key_and_its_owner(self, client, connector_admin):
        key, plaintext = create_api_key(connector_admin, "deploy script")
        client.post("/api/actions/connector", json.dumps(create_body()), content_type="application/json",
                    HTTP_AUTHORIZATION=f"ApiKey {plaintext}")
        record = only(object_type="connector", action="create")
        assert record.actor == "ada" and record.api_key_id == key.pk
        assert record.api_key_name.startswith("deploy script") and record.who.startswith("API key “deploy script")
        assert plaintext not in json.dumps([r.changes for r in AuditRecord.objects.all()]) + record.api_key_name


class TestConnectorAdmin:
    def test_a_change_in_admin_is_recorded_via_admin(self, client, admin_user, make_connector):
        connector = make_connector(name="Before", default_model="gpt-4o")
        client.force_login(admin_user)
        response = client.post(reverse("admin:connectors_connector_change", args=[connector.pk]), {
            "name": "After", "provider": "OpenAI", "api_url": connector.api_url, "default_model": "gpt-4o",
            "organization_id": "", "project_id": "", "headers": "", "api_key": "",
        })
        assert response.status_code == 302, response.content.decode()[:2000]
        record = only(object_type="connector", action="update")
        assert record.via == "admin" and record.actor == "root"
        assert record.changes == {"name": ["Before", "After"]}


class TestCommandsAndStartUp:
    def test_rotating_encryption_keys_is_recorded_as_re_encryption_not_a_new_key(self, settings, make_connector):
        from cryptography.fernet import Fernet

        connector = make_connector()
        settings.CONNECTORS_ENCRYPTION_KEYS = [Fernet.generate_key().decode(), *settings.CONNECTORS_ENCRYPTION_KEYS]
        call_command("rotate_connector_keys", stdout=io.StringIO())
        record = only(object_type="connector", object_id=connector.pk, action="update")
        assert record.via == "command" and record.actor == "system"
        assert "re-encrypted" in record.changes["encrypted_api_key"]

    def test_preconfigured_connectors_are_recorded_once_per_change(self, actions_config):
        from tests.core.test_preconfigured import PRECONFIGURED

        actions_config(PRECONFIGURED)
        assert record_preconfigured_changes() == 1
        assert record_preconfigured_changes() == 0  # a second start with the same configuration writes nothing
        created = only(object_type="connector", object_id="team-openai", action="create")
        assert created.via == "system" and created.actor == "system"
        assert created.changes["api_key"] == "API key set" and "sk-team-SECRET" not in json.dumps(created.changes)

        changed = json.loads(json.dumps(PRECONFIGURED))
        changed["preconfigured"]["team-openai"]["name"] = "Team OpenAI (EU)"
        changed["preconfigured"]["team-openai"]["secrets"]["apiKey"] = "sk-team-OTHER"
        actions_config(changed)
        assert record_preconfigured_changes() == 1
        update = only(object_type="connector", object_id="team-openai", action="update")
        assert update.changes["name"] == ["Team OpenAI", "Team OpenAI (EU)"]
        assert update.changes["api_key"] == "API key changed"
        all_text = json.dumps([r.changes for r in AuditRecord.objects.all()])
        assert "sk-team-SECRET" not in all_text and "sk-team-OTHER" not in all_text

        actions_config({})
        assert record_preconfigured_changes() == 1
        assert only(object_type="connector", object_id="team-openai", action="delete").changes["name"] == "Team OpenAI (EU)"


# --- API keys -----------------------------------------------------------------------------------------------------


class TestApiKeys:
    def test_created_and_revoked_on_the_account_page(self, client, operator):
        client.force_login(operator)
        client.post(reverse("api_keys"), {"name": "notebook"})
        key = ApiKey.objects.get()
        client.post(reverse("api_key_revoke", args=[key.pk]))
        created = only(object_type="api_key", action="create")
        revoked = only(object_type="api_key", action="revoke")
        assert created.object_id == str(key.pk) and created.actor == "olivia" and created.changes["name"] == "notebook"
        assert revoked.changes["revoked_at"][0] is None and revoked.changes["revoked_at"][1]
        assert key.digest not in json.dumps([created.changes, revoked.changes])

    def test_first_use_is_recorded_once(self, client, operator, make_connector):
        connector = make_connector()
        key, plaintext = create_api_key(operator, "app")
        for _ in range(3):
            client.get(f"/api/actions/connector/{connector.pk}", HTTP_AUTHORIZATION=f"ApiKey {plaintext}")
        from connectors.api import auth

        auth.forget_all()  # as another process would: its first call checks again, and finds the key already used
        client.get(f"/api/actions/connector/{connector.pk}", HTTP_AUTHORIZATION=f"ApiKey {plaintext}")
        record = only(object_type="api_key", action="first_use")
        assert record.object_id == str(key.pk) and record.changes == {"owner": "olivia"}
        assert record.api_key_id == key.pk

    def test_executions_write_nothing_to_the_trail_once_a_key_is_in_use(self, client, operator, make_connector,
                                                                        fake_openai):
        connector = make_connector(api_url=fake_openai.url("ok"))
        _, plaintext = create_api_key(operator, "app")
        body = json.dumps({"params": {"subAction": "run", "subActionParams": {"body": json.dumps(
            {"messages": [{"role": "user", "content": "hi"}]})}}})
        path = f"/api/actions/connector/{connector.pk}/_execute"
        client.post(path, body, content_type="application/json", HTTP_AUTHORIZATION=f"ApiKey {plaintext}")
        before = AuditRecord.objects.count()
        for _ in range(5):
            response = client.post(path, body, content_type="application/json", HTTP_AUTHORIZATION=f"ApiKey {plaintext}")
            assert response.json()["status"] == "ok"
        assert AuditRecord.objects.count() == before


# --- users, groups, permissions -------------------------------------------------------------------------------------


class TestUsersAndRoles:
    def test_a_role_granted_and_removed_in_admin(self, client, admin_user, operator):
        client.force_login(admin_user)
        admins = Group.objects.get(name="Connector admins")
        users = Group.objects.get(name="Connector users")
        form = {"username": "olivia", "first_name": "", "last_name": "", "email": "olivia@example.com",
                "is_active": "on", "groups": [admins.pk, users.pk], "last_login_0": "", "last_login_1": "",
                "date_joined_0": "2025-01-01", "date_joined_1": "00:00:00", "initial-date_joined_0": "2025-01-01",
                "initial-date_joined_1": "00:00:00"}
        response = client.post(reverse("admin:auth_user_change", args=[operator.pk]), form)
        assert response.status_code == 302, response.content.decode()[:3000]
        granted = only(object_type="user", object_id=str(operator.pk), action="grant", actor="root")
        assert granted.changes == {"role": ["Connector admins"]} and granted.via == "admin" and granted.actor == "root"

        form["groups"] = [admins.pk]
        client.post(reverse("admin:auth_user_change", args=[operator.pk]), form)
        removed = only(object_type="user", object_id=str(operator.pk), action="remove")
        assert removed.changes == {"role": ["Connector users"]}

    def test_a_user_created_made_superuser_and_its_password_changed(self, django_user_model):
        user = django_user_model.objects.create_user("bob", "bob@example.com", PASSWORD)
        created = only(object_type="user", object_id=str(user.pk), action="create")
        assert created.changes["username"] == "bob" and created.changes["password"] == "Password set"
        assert user.password not in json.dumps(created.changes)
        user.is_superuser = True
        user.set_password("another password 123")
        user.save()
        update = only(object_type="user", object_id=str(user.pk), action="update")
        assert update.changes["is_superuser"] == [False, True]
        assert update.changes["password"] == "Password changed"
        assert user.password not in json.dumps(update.changes)

    def test_permissions_of_a_user_and_of_a_group(self, operator):
        permission = Permission.objects.get(codename="view_usage_dashboard")
        operator.user_permissions.add(permission)
        assert only(object_type="user", action="grant", changes__has_key="permission").changes == {
            "permission": ["usage.view_usage_dashboard"]}
        group = Group.objects.create(name="Reviewers")
        group.permissions.add(permission)
        group.permissions.clear()
        mine = {"object_type": "group", "object_id": str(group.pk)}
        assert only(**mine, action="create").object_repr == "Reviewers"
        assert only(**mine, action="grant").changes == {"permission": ["usage.view_usage_dashboard"]}
        assert only(**mine, action="remove").changes == {"permission": ["usage.view_usage_dashboard"]}

    def test_adding_a_user_from_the_groups_side(self, operator):
        Group.objects.get(name="Auditors").user_set.add(operator)
        record = records(object_type="user", action="grant")[-1]
        assert record.object_id == str(operator.pk) and record.changes == {"role": ["Auditors"]}

    def test_a_sign_in_alone_is_not_a_user_change(self, client, operator):
        client.post(reverse("login"), {"username": "olivia", "password": PASSWORD})
        assert records(object_type="user", action="update") == []


# --- sign-ins ---------------------------------------------------------------------------------------------------------


class TestSignIns:
    def test_password_sign_in_and_failure_on_the_login_page(self, client, operator):
        client.post(reverse("login"), {"username": "olivia", "password": "wrong"}, REMOTE_ADDR="192.0.2.7")
        client.post(reverse("login"), {"username": "olivia", "password": PASSWORD}, REMOTE_ADDR="192.0.2.7")
        failed = only(action="sign_in_failed")
        assert failed.changes == {"method": "password"} and failed.object_id == "olivia"
        assert failed.actor == "system" and failed.client_ip == "192.0.2.7"
        signed_in = only(action="sign_in")
        assert signed_in.changes == {"method": "password"} and signed_in.actor == "olivia"
        assert "wrong" not in json.dumps([failed.changes, failed.object_repr])

    def test_basic_and_api_key_sign_ins_and_failures(self, client, operator, make_connector):
        connector = make_connector()
        path = f"/api/actions/connector/{connector.pk}"
        client.get(path, HTTP_AUTHORIZATION=basic_auth(operator))
        client.get(path, HTTP_AUTHORIZATION=basic_auth(operator))  # cached: not verified, not recorded again
        client.get(path, HTTP_AUTHORIZATION=basic_auth(operator, "wrong password"))
        key, plaintext = create_api_key(operator, "app")
        client.get(path, HTTP_AUTHORIZATION=f"Bearer {plaintext}")
        client.get(path, HTTP_AUTHORIZATION="ApiKey cak_not-a-real-key-at-all")
        methods = [(r.action, r.changes["method"]) for r in records(action__in=["sign_in", "sign_in_failed"])]
        assert methods == [("sign_in", "basic"), ("sign_in_failed", "basic"), ("sign_in", "api_key"),
                           ("sign_in_failed", "api_key")]
        assert only(action="sign_in", changes__method="api_key").api_key_id == key.pk
        for record in records(action="sign_in_failed"):
            assert record.via == "api"
            assert "wrong password" not in json.dumps([record.changes, record.object_repr])
            assert "not-a-real-key-at-all" not in record.object_repr

    def test_repeated_failures_are_counted_not_written_one_by_one(self, client, operator, make_connector, monkeypatch):
        connector = make_connector()
        path = f"/api/actions/connector/{connector.pk}"
        for _ in range(5):
            client.get(path, HTTP_AUTHORIZATION=basic_auth(operator, "guess"))
        assert len(records(action="sign_in_failed")) == 1
        monkeypatch.setattr(sign_ins, "FAILURE_WINDOW", 0.0)  # the window has passed
        client.get(path, HTTP_AUTHORIZATION=basic_auth(operator, "guess"))
        later = records(action="sign_in_failed")[-1]
        assert later.changes == {"method": "basic", "attempts_since_last_record": 4}

    def test_the_client_address_behind_a_trusted_proxy(self, client, settings, operator):
        settings.TRUSTED_PROXIES = [ipaddress.ip_network("10.0.0.0/8")]
        client.post(reverse("login"), {"username": "olivia", "password": PASSWORD}, REMOTE_ADDR="10.0.0.5",
                    HTTP_X_FORWARDED_FOR="1.2.3.4, 203.0.113.9, 10.0.0.6")
        assert only(action="sign_in").client_ip == "203.0.113.9"

    def test_an_untrusted_peer_cannot_forge_its_address(self, client, settings, operator):
        settings.TRUSTED_PROXIES = [ipaddress.ip_network("10.0.0.0/8")]
        client.post(reverse("login"), {"username": "olivia", "password": PASSWORD}, REMOTE_ADDR="198.51.100.1",
                    HTTP_X_FORWARDED_FOR="203.0.113.9")
        assert only(action="sign_in").client_ip == "198.51.100.1"


# --- one transaction, append-only, retention ---------------------------------------------------------------------------


class TestIntegrity:
    def test_a_change_is_not_committed_when_its_record_cannot_be_written(self, make_connector, monkeypatch):
        connector = make_connector(name="Unchanged")

        def broken(*args, **kwargs):
            raise DatabaseError("audit table unavailable")

        monkeypatch.setattr(trail, "_actor_fields", broken)
        connector.name = "Changed"
        with pytest.raises(DatabaseError):
            connector.save()
        assert Connector.objects.get(pk=connector.pk).name == "Unchanged"

    def test_a_rolled_back_change_leaves_no_record(self, make_connector):
        with pytest.raises(RuntimeError), transaction.atomic():
            make_connector(name="Never")
            raise RuntimeError("roll back")
        assert records(object_type="connector") == []

    def test_retention_removes_older_records_and_records_that_it_ran(self):
        old = trail.append("connector", "create", object_id="old", at=timezone.now() - timedelta(days=400))
        recent = trail.append("connector", "create", object_id="recent")
        cutoff = (timezone.now() - timedelta(days=30)).date().isoformat()
        out = io.StringIO()
        call_command("prune_audit_records", "--before", cutoff, stdout=out)
        assert "Deleted 1 audit record(s)" in out.getvalue()
        assert not AuditRecord.objects.filter(pk=old.pk).exists()
        assert AuditRecord.objects.filter(pk=recent.pk).exists()
        ran = only(object_type="audit_trail", action="prune")
        assert (ran.changes["before"], ran.changes["deleted"], ran.via) == (cutoff, 1, "command")

    @pytest.mark.parametrize("before, message", [("yesterday", "expected a date"), ("2999-01-01", "future")])
    def test_retention_refuses_a_bad_date(self, before, message):
        from django.core.management.base import CommandError

        with pytest.raises(CommandError, match=message):
            call_command("prune_audit_records", "--before", before)

    def test_no_page_offers_to_change_or_delete_a_record(self, client, admin_user):
        record = trail.append("connector", "create", object_id="x")
        client.force_login(admin_user)
        assert client.get(reverse("admin:audit_auditrecord_change", args=[record.pk])).status_code == 200
        assert client.post(reverse("admin:audit_auditrecord_change", args=[record.pk]), {"actor": "x"}).status_code == 403
        assert client.post(reverse("admin:audit_auditrecord_delete", args=[record.pk]), {"post": "yes"}).status_code == 403
        assert client.post(reverse("audit:list"), {}).status_code == 405
        assert AuditRecord.objects.get(pk=record.pk).actor == "system"


# --- /audit/ -----------------------------------------------------------------------------------------------------------


class TestAuditPage:
    def test_who_may_read_it(self, client, personas, auditor):
        assert client.get("/audit/").status_code == 302  # anonymous: to the login page
        for user, status in ((personas["outsider"], 403), (personas["connector_admin"], 403),
                             (personas["analyst"], 403), (auditor, 200), (personas["admin"], 200)):
            client.force_login(user)
            assert client.get("/audit/").status_code == status, user
            assert client.get("/audit/export.csv").status_code == status, user
            assert client.get("/audit/export.json").status_code == status, user

    def test_filters_by_actor_object_action_and_date(self, client, auditor):
        trail.append("connector", "create", object_id="c1", object_repr="One", actor="ada")
        trail.append("connector", "update", object_id="c1", object_repr="One", actor="bob")
        trail.append("connector", "create", object_id="c2", object_repr="Two", actor="ada")
        client.force_login(auditor)

        def shown(**params):
            return [(r.actor, r.action, r.object_id) for r in client.get("/audit/", params).context["records"]
                    if r.object_type == "connector"]

        assert shown(object_type="connector", object_id="c1") == [("bob", "update", "c1"), ("ada", "create", "c1")]
        assert shown(actor="ada") == [("ada", "create", "c2"), ("ada", "create", "c1")]
        assert shown(action="update") == [("bob", "update", "c1")]
        today = timezone.now().date()
        assert len(shown(**{"from": today.isoformat(), "to": today.isoformat()})) == 3
        assert shown(**{"to": (today - timedelta(days=1)).isoformat()}) == []

    def test_a_bad_date_is_a_400_that_names_the_parameter(self, client, auditor):
        client.force_login(auditor)
        response = client.get("/audit/", {"from": "last tuesday"})
        assert response.status_code == 400 and "[from]" in response.content.decode()
        assert client.get("/audit/", {"cursor": "abc"}).status_code == 400

    def test_keyset_pages_walk_every_record_once_newest_first(self, client, auditor):
        from connectors.audit import queries

        same_moment = timezone.now()
        made = [trail.append("connector", "update", object_id="p", at=same_moment if i % 2 else timezone.now())
                for i in range(queries.PAGE_SIZE * 2 + 7)]
        client.force_login(auditor)
        seen, params = [], {"object_id": "p"}
        for _ in range(10):
            response = client.get("/audit/", params)
            seen += [r.pk for r in response.context["records"]]
            if not response.context["next_url"]:
                break
            params = dict(item.split("=") for item in response.context["next_url"][1:].split("&"))
        expected = sorted(made, key=lambda r: (r.at, r.pk), reverse=True)
        assert seen == [r.pk for r in expected]

    def test_csv_and_json_exports_follow_the_filter(self, client, auditor):
        trail.append("connector", "create", object_id="c1", object_repr="=HYPERLINK(1)", changes={"name": "x"})
        trail.append("connector", "create", object_id="c2")
        client.force_login(auditor)
        response = client.get("/audit/export.csv", {"object_id": "c1"})
        rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
        assert len(rows) == 1 and rows[0]["object_id"] == "c1" and rows[0]["object_repr"] == "'=HYPERLINK(1)"
        assert json.loads(rows[0]["changes"]) == {"name": "x"}
        assert "attachment" in response["Content-Disposition"]
        response = client.get("/audit/export.json", {"object_type": "connector"})
        data = json.loads(b"".join(response.streaming_content))
        assert [item["object_id"] for item in data] == ["c2", "c1"]
        assert set(data[0]) >= {"at", "actor", "via", "client_ip", "user_agent", "action", "changes"}

    def test_a_connector_page_links_to_its_history(self, client, admin_user, auditor, make_connector):
        connector = make_connector()
        auditor.groups.add(Group.objects.get(name="Connector users"))
        client.force_login(auditor)
        html = client.get(reverse("connectors:detail", args=[connector.pk])).content.decode()
        link = f'/audit/?object_type=connector&amp;object_id={connector.pk}'
        assert link in html
        page = client.get(link.replace("&amp;", "&")).content.decode()
        assert "Test connector" in page and "create" in page
        client.force_login(make_user(type(auditor), "nohistory", "Connector users"))
        assert "/audit/" not in client.get(reverse("connectors:detail", args=[connector.pk])).content.decode()

    @pytest.mark.skipif(connection.vendor != "postgresql", reason="query plans are PostgreSQL's")
    @pytest.mark.parametrize("params, index", [
        ({}, "audit_at_id"),
        ({"object_type": "connector", "object_id": "c1"}, "audit_object_at_id"),
        ({"actor": "ada"}, "audit_actor_at_id"),
        ({"action": "sign_in_failed"}, "audit_action_at_id"),
    ])
    def test_each_page_is_one_index_range_scan_without_a_sort(self, params, index):
        """What keeps page N as cheap as page 1 at ten million records: the ORDER BY is served by the index."""
        from connectors.audit import queries

        for _ in range(3):
            trail.append("connector", "sign_in_failed", object_id="c1", actor="ada")
        cursor_id = AuditRecord.objects.order_by("-id").values_list("id", flat=True)[1]
        records = queries.filtered(queries.parse_query(params))
        last = AuditRecord.objects.get(pk=cursor_id).at
        query = queries.after_cursor(records, last, cursor_id)[:51]
        with transaction.atomic(), connection.cursor() as cursor:
            # A table this small would be read whole (or through a bitmap) whatever the indexes; with those off,
            # the plan shows whether an index can deliver the page in order, as it must at ten million rows.
            cursor.execute("SET LOCAL enable_seqscan = off")
            cursor.execute("SET LOCAL enable_bitmapscan = off")
            sql, sql_params = query.query.sql_with_params()
            cursor.execute("EXPLAIN " + sql, sql_params)
            plan = "\n".join(row[0] for row in cursor.fetchall())
        assert index in plan and "Sort" not in plan, plan


class TestGovernanceRecords:
    """Budgets, limits and alert channels (usage/governance) are in the trail too."""

    def test_a_budget_created_changed_and_deleted(self, client, admin_user, make_connector):
        from usage.governance.models import Budget, Period, Scope, Unit

        connector = make_connector()
        with transaction.atomic():  # as /admin/ does
            budget = Budget.objects.create(name="Pilot", scope=Scope.CONNECTOR, connector_id=connector.pk,
                                           period=Period.MONTH, unit=Unit.TOKENS, amount=1000)
        budget.amount = 5000
        budget.save()
        budget.delete()
        create, update, delete = records(object_type="budget")
        assert (create.action, update.action, delete.action) == ("create", "update", "delete")
        assert create.changes["name"] == "Pilot"
        assert list(update.changes) == ["amount"]
        assert [float(value) for value in update.changes["amount"]] == [1000, 5000]

    def test_an_alert_channels_target_and_secret_are_never_recorded(self):
        from usage.governance.models import AlertChannel, ChannelKind

        hook = "https://hooks.slack.example/services/T000/B000/SECRETTOKEN"
        channel = AlertChannel.objects.create(name="slack", kind=ChannelKind.WEBHOOK, target=hook)
        channel.target = hook.replace("SECRETTOKEN", "OTHERTOKEN")
        channel.save()
        create, update = records(object_type="alert_channel")
        assert create.changes["target_encrypted"] == "Target set"
        assert update.changes == {"target_encrypted": "Target changed"}
        assert "TOKEN" not in json.dumps([create.changes, update.changes])
