"""A certificate authority made in the test, and server certificates it signs (``cryptography``)."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


@dataclass
class ServerCertificate:
    cert_file: Path
    key_file: Path

    def server_context(self, *, require_client_certificate_from: CertificateAuthority | None = None) -> ssl.SSLContext:
        """The server's TLS context; with a CA, the server requires a client certificate that CA signed (mutual TLS)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, self.key_file)
        if require_client_certificate_from is not None:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(cadata=require_client_certificate_from.pem)
        return context

    @property
    def pem(self) -> str:
        return self.cert_file.read_text()

    @property
    def key_pem(self) -> str:
        return self.key_file.read_text()


class CertificateAuthority:
    """A throwaway CA; ``pem`` is its certificate, ``issue(...)`` makes a server certificate for some names."""

    def __init__(self, folder: Path, common_name: str = "Connectors test CA"):
        self.folder = folder
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(_name(common_name))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                    key_encipherment=False, data_encipherment=False, key_agreement=False, encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        self.pem = self.certificate.public_bytes(serialization.Encoding.PEM).decode()
        self.cert_file = folder / f"{common_name.replace(' ', '-')}.pem"
        self.cert_file.write_text(self.pem)

    def issue_client(self, common_name: str = "connectors-admin client", stem: str = "client") -> ServerCertificate:
        """A client certificate (for mutual TLS), signed by this CA; same shape as a server certificate's files."""
        return self.issue(common_name, stem=stem, usage=x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH)

    def issue(self, *names: str, stem: str = "server", usage=None) -> ServerCertificate:
        """A server certificate for DNS names and IP addresses (the first name is also the common name)."""
        key = ec.generate_private_key(ec.SECP256R1())
        alt_names: list[x509.GeneralName] = []
        for name in names:
            try:
                alt_names.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                alt_names.append(x509.DNSName(name))
        now = datetime.datetime.now(datetime.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(_name(names[0]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([usage or x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )
        cert_file = self.folder / f"{stem}.crt"
        key_file = self.folder / f"{stem}.key"
        cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(_pem_key(key))
        return ServerCertificate(cert_file, key_file)
