"""A local certificate authority and the certificates of one bus deployment, and the
nats-server ``tls`` blocks that use them (issue 17).

``write_local_pki(directory)`` makes a CA, a server certificate (for the client port and
the routes between servers: it serves and it connects) and a client certificate for mutual
TLS, each key in a 0600 file. Clients trust the CA through ``BusSettings.tls_ca_file`` and
verify the server's name (127.0.0.1 / localhost by default) as any TLS client does.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tandem.events.private_files import write_private

log = logging.getLogger(__name__)

DEFAULT_SERVER_NAMES = ("127.0.0.1", "localhost")
#: Long enough for a local deployment not to expire under it; rotate by writing anew.
VALIDITY = datetime.timedelta(days=825)
CA_VALIDITY = datetime.timedelta(days=3650)


@dataclass(frozen=True)
class TlsFiles:
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Tandem"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def make_ca(
    common_name: str = "Tandem local bus CA",
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def issue_certificate(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    common_name: str,
    *,
    names: Sequence[str] = (),
    server: bool = False,
    client: bool = False,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A leaf certificate signed by the CA. ``names``: DNS names and IP addresses it is
    valid for (a server's); ``server``/``client``: the uses it may be put to (a nats-server
    in a cluster needs both: it accepts routes and connects to the others)."""
    key = _key()
    now = datetime.datetime.now(datetime.UTC)
    usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + (
        [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
    )
    if not usages:
        raise ValueError("a certificate must be for a server, a client or both")
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([_general_name(n) for n in names]), critical=False
        )
    return builder.sign(ca_key, hashes.SHA256()), key


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def tls_files_in(directory: Path) -> TlsFiles:
    """Where ``write_local_pki(directory)`` puts each file."""
    return TlsFiles(
        ca_cert=directory / "ca.pem",
        ca_key=directory / "ca-key.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server-key.pem",
        client_cert=directory / "client.pem",
        client_key=directory / "client-key.pem",
    )


def write_local_pki(
    directory: Path, server_names: Sequence[str] = DEFAULT_SERVER_NAMES
) -> TlsFiles:
    """Create a CA and the server and client certificates in ``directory`` (replacing any
    there: that is how they are rotated). Every file is 0600."""
    directory.mkdir(parents=True, exist_ok=True)
    files = tls_files_in(directory)
    ca_cert, ca_key = make_ca()
    server_cert, server_key = issue_certificate(
        ca_cert, ca_key, "tandem bus server", names=server_names, server=True, client=True
    )
    client_cert, client_key = issue_certificate(ca_cert, ca_key, "tandem bus client", client=True)
    for path, data in (
        (files.ca_key, _key_pem(ca_key)),
        (files.ca_cert, _cert_pem(ca_cert)),
        (files.server_key, _key_pem(server_key)),
        (files.server_cert, _cert_pem(server_cert)),
        (files.client_key, _key_pem(client_key)),
        (files.client_cert, _cert_pem(client_cert)),
    ):
        write_private(path, data)
    log.info("bus certificates written to %s (valid for %s)", directory, ", ".join(server_names))
    return files


def server_tls_config(files: TlsFiles, *, verify_clients: bool = False) -> str:
    """The client port's ``tls`` block: TLS required; with ``verify_clients`` every client
    must also show a certificate signed by the CA (mutual TLS)."""
    return "tls " + _tls_map(files, verify=verify_clients) + "\n"


def route_tls_block(files: TlsFiles) -> str:
    """The ``tls`` block for inside a ``cluster {}``: routes are mutual TLS (each server
    verifies the other's certificate against the CA)."""
    return "tls " + _tls_map(files, verify=True)


def _tls_map(files: TlsFiles, *, verify: bool) -> str:
    entries = {
        "cert_file": str(files.server_cert),
        "key_file": str(files.server_key),
        "ca_file": str(files.ca_cert),
        "verify": verify,
        "timeout": 5,
    }
    return json.dumps(entries, indent=2)
