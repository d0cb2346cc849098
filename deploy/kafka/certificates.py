"""The local cluster's TLS material: a private CA and one certificate every node presents.

The CA exists only on this machine and only for the local cluster; clients trust it through
`ca.pem`. Every node presents the same certificate (CN=safehub-node, valid for 127.0.0.1 and
localhost): on the INTERNAL and CONTROLLER listeners, which require a client certificate, it is
how the nodes prove to each other that they are the cluster (principal `User:safehub-node`).

The files are made once and kept with the cluster's state across `down`/`up`, so that a
client's CA file stays valid:
- `ca.pem`   the CA certificate (public);
- `ca.key`   the CA private key (0600), kept so that a lost node key can be re-issued;
- `node.pem` the node's private key (unencrypted PKCS#8) followed by its certificate chain
             (0600): Kafka's `ssl.keystore.type=PEM` reads key and chain from one file, and
             Python's ssl module reads the same file as certificate and key.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_NAME = "safehub local CA"
NODE_NAME = "safehub-node"
NODE_PRINCIPAL = f"User:{NODE_NAME}"
# Long enough that a developer's local cluster never expires under them; it trusts nothing
# beyond this machine.
CA_DAYS = 3650
NODE_DAYS = 825


@dataclass(frozen=True)
class Certificates:
    """Paths of one cluster's TLS files."""

    folder: Path

    @property
    def ca_file(self) -> Path:
        return self.folder / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.folder / "ca.key"

    @property
    def node_file(self) -> Path:
        return self.folder / "node.pem"

    @property
    def names(self) -> tuple[str, ...]:
        return (self.ca_file.name, self.ca_key.name, self.node_file.name)

    def complete(self) -> bool:
        return all((self.folder / n).is_file() for n in self.names)


def ensure_certificates(folder: Path) -> Certificates:
    """The cluster's CA and node certificate, made now if missing.

    An existing CA is kept (clients trust it); the node certificate is re-issued from it only
    when `node.pem` is gone. Without the CA's key a new CA is made, and clients need the new
    `ca.pem`.
    """
    certs = Certificates(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if certs.ca_file.is_file() and certs.ca_key.is_file():
        ca_key = serialization.load_pem_private_key(certs.ca_key.read_bytes(), password=None)
        ca_cert = x509.load_pem_x509_certificate(certs.ca_file.read_bytes())
        if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{certs.ca_key} is not the EC key this launcher makes")
    else:
        ca_key, ca_cert = _new_ca()
        _write_private(certs.ca_key, _key_pem(ca_key))
        _write_public(certs.ca_file, ca_cert.public_bytes(serialization.Encoding.PEM))
        certs.node_file.unlink(missing_ok=True)  # signed by the old CA, if any
    if not certs.node_file.is_file():
        node_key, node_cert = _new_node(ca_key, ca_cert)
        _write_private(
            certs.node_file,
            _key_pem(node_key)
            + node_cert.public_bytes(serialization.Encoding.PEM)
            + ca_cert.public_bytes(serialization.Encoding.PEM),
        )
    return certs


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _new_ca() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME)])
    start = _now() - datetime.timedelta(minutes=5)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _new_node(
    ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    start = _now() - datetime.timedelta(minutes=5)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, NODE_NAME)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=NODE_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([
                x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")),
                x509.DNSName("localhost"),
            ]),
            critical=False,
        )
        # A node is a TLS server on every listener and a TLS client towards the others.
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                   ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def _write_private(path: Path, data: bytes) -> None:
    """Create the file 0600 from the start, so the key is never readable by others."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    tmp.replace(path)


def _write_public(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.chmod(0o644)
    tmp.replace(path)
