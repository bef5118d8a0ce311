"""Mutual TLS to an Other provider with the connector's PKI secrets (Kibana's certificateData, privateKeyData,
caData; docs/KIBANA.md 1.2), against a real local TLS server that requires a client certificate; the PKI material
is encrypted at rest, rotated with the API key, and never shown again."""

import base64
import json

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.urls import reverse

from connectors.models import Connector, Provider
from tests.conftest import basic_auth
from tests.helpers.outbound import assert_recorded_once, run
from tests.servers.fake_openai import FakeOpenAI
from tests.servers.tls import CertificateAuthority

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("debug_logs")]


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.fixture(scope="module")
def cas(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pki")
    return CertificateAuthority(folder, "Server CA"), CertificateAuthority(folder, "Client CA")


@pytest.fixture(scope="module")
def mtls_server(cas):
    """https://127.0.0.1 with a certificate from the server CA, requiring a client certificate from the client CA."""
    server_ca, client_ca = cas
    context = server_ca.issue("127.0.0.1", stem="mtls").server_context(require_client_certificate_from=client_ca)
    server = FakeOpenAI(ssl_context=context).start()
    yield server
    server.stop()


@pytest.fixture
def mtls(mtls_server):
    mtls_server.clear()
    return mtls_server


@pytest.fixture(scope="module")
def client_certificate(cas):
    return cas[1].issue_client()


def pki_connector(make_connector, server, certificate, *, ca: str | None, mode: str = "full") -> Connector:
    connector = Connector(name="mTLS", provider=Provider.OTHER, api_url=server.url("ok"), default_model="local",
                          verification_mode=mode)
    connector.certificate_data = b64(certificate.pem)
    connector.private_key_data = b64(certificate.key_pem)
    connector.ca_data = b64(ca) if ca else ""
    connector.full_clean()
    connector.save()
    return connector


def test_the_client_certificate_opens_a_server_that_requires_one(make_connector, mtls, cas, client_certificate,
                                                                  caplog):
    connector = pki_connector(make_connector, mtls, client_certificate, ca=cas[0].pem)
    execution = run(connector)
    assert execution.envelope["status"] == "ok", execution.envelope
    assert len(mtls.requests) == 1 and "authorization" not in mtls.requests[0].headers
    event = assert_recorded_once(execution, caplog, outcome="success")
    assert client_certificate.key_pem not in caplog.text and client_certificate.key_pem not in str(event.__dict__)


def test_pem_pasted_on_one_line_still_loads(make_connector, mtls, cas, client_certificate, caplog):
    # Kibana reformats PEM whose line breaks were lost (formatPEMContent); so does this app.
    one_line = type(client_certificate)(client_certificate.cert_file, client_certificate.key_file)
    connector = pki_connector(make_connector, mtls, one_line, ca=cas[0].pem.replace("\n", " "))
    connector.certificate_data = b64(client_certificate.pem.replace("\n", " "))
    connector.save()
    assert run(connector).envelope["status"] == "ok"


def test_without_a_client_certificate_the_server_refuses(make_connector, mtls, cas, caplog):
    connector = make_connector(name="no cert", provider=Provider.OTHER, api_url=mtls.url("ok"), default_model="m",
                               api_key="", verification_mode="none")
    execution = run(connector)
    assert execution.envelope["status"] == "error"
    assert not mtls.requests
    assert_recorded_once(execution, caplog, outcome="failure")


def test_pki_is_used_only_with_a_verification_mode_as_in_kibana(make_connector, mtls, cas, client_certificate,
                                                                caplog):
    connector = pki_connector(make_connector, mtls, client_certificate, ca=cas[0].pem, mode="")
    execution = run(connector)
    assert execution.envelope["status"] == "error"  # no client certificate sent, and the server CA is not trusted
    assert not mtls.requests
    assert_recorded_once(execution, caplog, outcome="failure")


def test_the_ca_data_replaces_the_public_roots_and_mode_none_skips_verification(make_connector, mtls, cas,
                                                                                client_certificate, caplog):
    wrong_ca = pki_connector(make_connector, mtls, client_certificate, ca=cas[1].pem)
    execution = run(wrong_ca)
    assert "unable to get local issuer certificate" in execution.envelope["service_message"]
    Connector.objects.all().delete()
    unverified = pki_connector(make_connector, mtls, client_certificate, ca=None, mode="none")
    assert run(unverified).envelope["status"] == "ok"


def test_a_certificate_that_does_not_load_is_a_clear_error(make_connector, mtls, caplog):
    # Kibana's integration test creates a PKI connector with placeholder PEM (only the headers are checked at save).
    connector = Connector(name="bad", provider=Provider.OTHER, api_url=mtls.url("ok"), default_model="m",
                          verification_mode="full")
    connector.certificate_data = b64("-----BEGIN CERTIFICATE-----\nMIIC+zCCAeOgAwIBAgIJAKKpPKItestcert\n-----END CERTIFICATE-----")
    connector.private_key_data = b64("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----")
    connector.full_clean()
    connector.save()
    execution = run(connector)
    assert execution.envelope["status"] == "error"
    assert f"The TLS settings for 127.0.0.1:{mtls.port} could not be used" in execution.envelope["service_message"]
    assert_recorded_once(execution, caplog, outcome="failure")


def test_pki_secrets_come_through_the_api_encrypted_and_never_come_back(client, connector_admin, mtls, cas,
                                                                         client_certificate):
    secrets = {"certificateData": b64(client_certificate.pem), "privateKeyData": b64(client_certificate.key_pem),
               "caData": b64(cas[0].pem)}
    body = {"name": "mTLS", "connector_type_id": ".gen-ai", "secrets": secrets,
            "config": {"apiProvider": "Other", "apiUrl": mtls.url("ok"), "defaultModel": "m",
                       "verificationMode": "full"}}
    auth = {"HTTP_AUTHORIZATION": basic_auth(connector_admin), "HTTP_KBN_XSRF": "true"}
    created = client.post("/api/actions/connector", body, content_type="application/json", **auth)
    assert created.status_code == 200, created.content
    connector = Connector.objects.get()
    assert connector.private_key_data == secrets["privateKeyData"]
    assert secrets["privateKeyData"] not in connector.encrypted_private_key_data
    responses = [created, client.get(f"/api/actions/connector/{connector.pk}", **auth),
                 client.get("/api/actions/connectors", **auth)]
    client.force_login(connector_admin)
    responses.append(client.get(reverse("connectors:edit", args=[connector.pk])))
    for response in responses:
        text = response.content.decode()
        for value in secrets.values():
            assert value not in text
        assert "BEGIN PRIVATE KEY" not in text
    # What GET returns can be sent back as an update: the stored PKI secrets stay.
    fetched = responses[1].json()
    updated = client.put(f"/api/actions/connector/{connector.pk}", {"name": fetched["name"], "config": fetched["config"]},
                         content_type="application/json", **auth)
    assert updated.status_code == 200, updated.content
    connector.refresh_from_db()
    assert connector.certificate_data == secrets["certificateData"]
    executed = client.post(f"/api/actions/connector/{connector.pk}/_execute",
                           {"params": {"subAction": "run", "subActionParams": {"body": json.dumps(
                               {"messages": [{"role": "user", "content": "hi"}]})}}},
                           content_type="application/json", **auth)
    assert executed.json()["status"] == "ok", executed.json()


def test_the_form_takes_pem_files_and_never_shows_them_again(client, connector_admin, mtls, cas, client_certificate):
    from django.core.files.uploadedfile import SimpleUploadedFile

    client.force_login(connector_admin)
    response = client.post(reverse("connectors:create"), {
        "name": "mTLS form", "provider": "Other", "api_url": mtls.url("ok"), "default_model": "m",
        "verification_mode": "full", "enable_native_function_calling": "unknown", "headers": "",
        "certificate_file": SimpleUploadedFile("client.crt", client_certificate.pem.encode()),
        "private_key_file": SimpleUploadedFile("client.key", client_certificate.key_pem.encode()),
        "ca_file": SimpleUploadedFile("ca.pem", cas[0].pem.encode()),
    })
    assert response.status_code == 302, response.context["form"].errors
    connector = Connector.objects.get()
    assert base64.b64decode(connector.private_key_data).decode() == client_certificate.key_pem
    page = client.get(reverse("connectors:edit", args=[connector.pk])).content.decode()
    assert "BEGIN PRIVATE KEY" not in page and "A certificate is stored" in page
    assert run(connector).envelope["status"] == "ok"


def test_rotation_reencrypts_the_pki_secrets_too(make_connector, mtls, cas, client_certificate, settings, capsys):
    connector = pki_connector(make_connector, mtls, client_certificate, ca=cas[0].pem)
    old = connector.encrypted_private_key_data
    new_key = Fernet.generate_key().decode()
    settings.CONNECTORS_ENCRYPTION_KEYS = [new_key, *settings.CONNECTORS_ENCRYPTION_KEYS]
    call_command("rotate_connector_keys")
    assert "Re-encrypted 3 secret(s)" in capsys.readouterr().out
    connector.refresh_from_db()
    assert connector.encrypted_private_key_data != old
    assert Fernet(new_key).decrypt(connector.encrypted_private_key_data.encode()).decode() == b64(client_certificate.key_pem)
