"""API keys are encrypted at rest, and the encryption keys rotate."""

import sqlite3
import tempfile
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.db import connection

from connectors.crypto import SecretUnavailable
from connectors.models import Connector

pytestmark = pytest.mark.django_db

SECRET = "sk-proj-PLAINTEXT-MUST-NOT-BE-STORED-42"
OLD_KEY = "p6S0Bi6Mn5mDNjsC5nWxGZA0Y0pvjW2sJqHjeIuQoxo="  # the test environment's key (tests/environment.py)


def every_stored_value() -> str:
    """The text of every row of every table, as the database holds it."""
    chunks = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")
            chunks.extend(repr(row) for row in cursor.fetchall())
    return "\n".join(chunks)


def test_the_key_is_not_stored_in_plaintext(make_connector):
    connector = make_connector(api_key=SECRET)
    stored = Connector.objects.values_list("encrypted_api_key", flat=True).get(pk=connector.pk)
    assert stored and SECRET not in stored
    assert SECRET not in every_stored_value()


@pytest.mark.skipif(connection.vendor != "sqlite", reason="reads the SQLite file itself; the PostgreSQL run checks every row")
@pytest.mark.django_db(transaction=True)  # VACUUM cannot run inside the test's transaction
def test_the_key_is_not_in_the_sqlite_database_file(make_connector):
    make_connector(api_key=SECRET)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "copy.sqlite3"
        connection.ensure_connection()
        # The test database lives in memory; VACUUM INTO writes its pages out as they would be on disk.
        connection.connection.execute(f"VACUUM INTO '{path}'")
        raw = path.read_bytes()
        assert raw.startswith(b"SQLite format 3")
        assert SECRET.encode() not in raw
        assert sqlite3.connect(path).execute("SELECT count(*) FROM connectors_connector").fetchone() == (1,)


def test_rotation_reencrypts_under_the_newest_key(make_connector, settings, capsys):
    connector = make_connector(api_key=SECRET)
    old_ciphertext = connector.encrypted_api_key
    new_key = Fernet.generate_key().decode()
    settings.CONNECTORS_ENCRYPTION_KEYS = [new_key, OLD_KEY]
    connector.refresh_from_db()
    assert connector.api_key == SECRET  # old ciphertext still readable during the rotation

    call_command("rotate_connector_keys")
    assert "Re-encrypted 1 secret(s); 0 already used the newest key." in capsys.readouterr().out
    connector.refresh_from_db()
    assert connector.encrypted_api_key != old_ciphertext
    assert Fernet(new_key).decrypt(connector.encrypted_api_key.encode()).decode() == SECRET

    call_command("rotate_connector_keys")
    assert "Re-encrypted 0 secret(s); 1 already used the newest key." in capsys.readouterr().out

    settings.CONNECTORS_ENCRYPTION_KEYS = [new_key]  # the old key can now be dropped
    connector.refresh_from_db()
    assert connector.api_key == SECRET


def test_without_the_right_key_the_secret_is_unavailable_not_garbage(make_connector, settings):
    connector = make_connector(api_key=SECRET)
    settings.CONNECTORS_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    connector.refresh_from_db()
    with pytest.raises(SecretUnavailable) as caught:
        _ = connector.api_key
    assert SECRET not in str(caught.value)


def test_rotation_refuses_to_half_finish_when_a_key_is_unreadable(make_connector, settings):
    from django.core.management.base import CommandError

    first = make_connector(name="a", api_key=SECRET)
    make_connector(name="b", api_key=SECRET)
    Connector.objects.filter(pk=first.pk).update(encrypted_api_key=Fernet(Fernet.generate_key()).encrypt(b"x").decode())
    settings.CONNECTORS_ENCRYPTION_KEYS = [Fernet.generate_key().decode(), OLD_KEY]
    before = dict(Connector.objects.values_list("pk", "encrypted_api_key"))
    with pytest.raises(CommandError):
        call_command("rotate_connector_keys")
    assert dict(Connector.objects.values_list("pk", "encrypted_api_key")) == before


def test_the_django_admin_never_shows_the_key(client, admin_user, make_connector):
    connector = make_connector(api_key=SECRET)
    client.force_login(admin_user)
    html = client.get(f"/admin/connectors/connector/{connector.pk}/change/").content.decode()
    assert SECRET not in html and connector.encrypted_api_key not in html
    assert "•••••••• (encrypted)" in html
    listing = client.get("/admin/connectors/connector/").content.decode()
    assert SECRET not in listing


def test_the_key_is_decrypted_once_per_instance_and_never_pickled(make_connector, monkeypatch):
    import pickle

    from connectors import models

    connector = Connector.objects.get(pk=make_connector(api_key=SECRET).pk)
    calls = []
    real = models.decrypt_secret
    monkeypatch.setattr(models, "decrypt_secret", lambda token: calls.append(token) or real(token))
    assert (connector.api_key, connector.api_key) == (SECRET, SECRET)
    assert len(calls) == 1
    connector.api_key = "sk-another-key-1234567890"  # a new value is decrypted afresh
    assert connector.api_key == "sk-another-key-1234567890"
    assert SECRET.encode() not in pickle.dumps(connector)
    assert b"sk-another-key" not in pickle.dumps(connector)
