"""TLS: the self-signed certificate made at ``init`` and the TLS 1.3-only server context."""
from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from pathlib import Path

CERT_NAME = "tls-cert.pem"
KEY_NAME = "tls-key.pem"


def make_self_signed(directory: Path, hostname: str, days: int = 825) -> tuple[Path, Path]:
    """ECDSA P-256 certificate for ``hostname``, localhost, 127.0.0.1 and ::1; key file mode 0600."""
    # Only `init` makes a certificate: `serve` imports this module without cryptography's x509 layer.
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cix-appliance")])
    now = datetime.datetime.now(datetime.UTC)
    names: list[x509.GeneralName] = [x509.DNSName(n) for n in dict.fromkeys([hostname, "localhost"])]
    names += [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.IPAddress(ipaddress.ip_address("::1"))]
    try:
        ip = ipaddress.ip_address(hostname)
        names = [x509.IPAddress(ip), *(n for n in names if n.value != ip)]
    except ValueError:
        pass
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / CERT_NAME, directory / KEY_NAME
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """A TLS 1.3-only server context: ``serve`` builds one to prove the certificate and key load and
    match before anything starts (granian's own loading would fail only once serving)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(str(cert_file), str(key_file))
    return context


def cert_paths(data_dir: Path, cert_file: str, key_file: str) -> tuple[Path, Path]:
    """The operator's certificate when configured, else the self-signed one from ``init``."""
    if cert_file:
        return Path(cert_file), Path(key_file)
    return data_dir / CERT_NAME, data_dir / KEY_NAME
