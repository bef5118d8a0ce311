"""HTTP Basic verification cache and the API keys page."""

from unittest import mock

import pytest
from django.contrib.auth.hashers import MD5PasswordHasher
from django.contrib.auth.models import Group
from django.db import connection
from django.test.utils import CaptureQueriesContext

from connectors.accounts.api_keys import create_api_key, digest_of
from connectors.models import ApiKey
from tests.conftest import PASSWORD, basic_auth

pytestmark = pytest.mark.django_db


def list_connectors(client, authorization):
    return client.get("/api/actions/connectors", HTTP_AUTHORIZATION=authorization)


class TestBasicAuthCache:
    def test_the_password_hasher_runs_once_for_repeated_calls(self, client, operator):
        with mock.patch.object(MD5PasswordHasher, "verify", autospec=True, side_effect=MD5PasswordHasher.verify) as verify:
            for _ in range(5):
                assert list_connectors(client, basic_auth(operator)).status_code == 200
        assert verify.call_count == 1

    def test_a_cached_call_runs_no_authentication_query(self, client, operator):
        list_connectors(client, basic_auth(operator))
        with CaptureQueriesContext(connection) as queries:
            assert list_connectors(client, basic_auth(operator)).status_code == 200
        assert not [q for q in queries.captured_queries if "auth_user" in q["sql"] or "auth_permission" in q["sql"]]

    def test_a_wrong_password_is_not_served_from_the_cache(self, client, operator):
        assert list_connectors(client, basic_auth(operator)).status_code == 200
        assert list_connectors(client, basic_auth(operator, PASSWORD + "x")).status_code == 401

    def test_changing_the_password_drops_the_cached_credentials(self, client, operator):
        assert list_connectors(client, basic_auth(operator)).status_code == 200
        operator.set_password("a whole new password")
        operator.save()
        assert list_connectors(client, basic_auth(operator)).status_code == 401
        assert list_connectors(client, basic_auth(operator, "a whole new password")).status_code == 200

    def test_deactivating_the_user_drops_the_cached_credentials(self, client, operator):
        assert list_connectors(client, basic_auth(operator)).status_code == 200
        operator.is_active = False
        operator.save()
        assert list_connectors(client, basic_auth(operator)).status_code == 401

    def test_removing_a_role_takes_effect_at_once(self, client, operator):
        assert list_connectors(client, basic_auth(operator)).status_code == 200
        operator.groups.remove(Group.objects.get(name="Connector users"))
        assert list_connectors(client, basic_auth(operator)).status_code == 403

    def test_the_cache_can_be_turned_off(self, client, operator, settings):
        settings.BASIC_AUTH_CACHE_SECONDS = 0
        with mock.patch.object(MD5PasswordHasher, "verify", autospec=True, side_effect=MD5PasswordHasher.verify) as verify:
            list_connectors(client, basic_auth(operator))
            list_connectors(client, basic_auth(operator))
        assert verify.call_count == 2


class TestApiKeysPage:
    def test_needs_login(self, client):
        response = client.get("/account/api-keys/")
        assert response.status_code == 302 and "/accounts/login/" in response["Location"]

    def test_a_new_key_is_shown_once_and_stored_hashed(self, client, analyst):
        client.force_login(analyst)
        response = client.post("/account/api-keys/", {"name": "reporting"}, follow=True)
        html = response.content.decode()
        record = ApiKey.objects.get(user=analyst)
        start = html.index("data-new-api-key>") + len("data-new-api-key>")
        key = html[start : html.index("<", start)].strip()
        assert key.startswith("cak_") and len(key) > 40
        assert record.digest == digest_of(key) and key not in record.digest
        assert record.prefix == key[:12]
        assert key not in client.get("/account/api-keys/").content.decode()

    def test_a_key_needs_a_name(self, client, analyst):
        client.force_login(analyst)
        response = client.post("/account/api-keys/", {"name": "  "}, follow=True)
        assert "Give the key a name" in response.content.decode()
        assert not ApiKey.objects.exists()

    def test_revoking_stops_the_key(self, client, operator):
        record, key = create_api_key(operator, "ci")
        assert list_connectors(client, f"ApiKey {key}").status_code == 200
        client.force_login(operator)
        client.post(f"/account/api-keys/{record.pk}/revoke/")
        record.refresh_from_db()
        assert record.revoked_at is not None
        assert list_connectors(client, f"ApiKey {key}").status_code == 401
        assert "Revoked" in client.get("/account/api-keys/").content.decode()

    def test_nobody_can_revoke_someone_elses_key(self, client, operator, outsider):
        record, _ = create_api_key(operator, "ci")
        client.force_login(outsider)
        assert client.post(f"/account/api-keys/{record.pk}/revoke/").status_code == 404
        record.refresh_from_db()
        assert record.revoked_at is None

    def test_revoke_asks_for_confirmation_and_only_a_post_revokes(self, client, operator):
        record, _ = create_api_key(operator, "ci")
        client.force_login(operator)
        response = client.get(f"/account/api-keys/{record.pk}/revoke/")
        assert response.status_code == 200 and "Revoke “ci”?" in response.content.decode()
        record.refresh_from_db()
        assert record.revoked_at is None

    def test_last_used_time_is_recorded_and_shown(self, client, operator):
        record, key = create_api_key(operator, "ci")
        list_connectors(client, f"ApiKey {key}")
        record.refresh_from_db()
        assert record.last_used_at is not None
        client.force_login(operator)
        html = client.get("/account/api-keys/").content.decode()
        assert record.last_used_at.strftime("%Y-%m-%d") in html and "never" not in html
