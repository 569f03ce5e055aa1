"""SSL contexts per the DICOM BCP 195 TLS Secure Transport Connection Profile (PS3.15 B.9, B.10).

TLS 1.2 or 1.3 only; for TLS 1.2 only ECDHE/DHE key exchange with AES-GCM or ChaCha20-Poly1305
(RFC 9325 / BCP 195 recommended suites); no compression, no renegotiation. Both directions are
mutually authenticated: the archive presents its certificate and requires the peer's, verified
against the configured CA bundle (the customers' CAs). Which organisation a valid certificate
identifies is decided afterwards, against the registry (``archive.model.certificates``).
"""

from __future__ import annotations

import os
import ssl
import tempfile
from dataclasses import dataclass

# OpenSSL names of the BCP 195 (RFC 9325 section 4.2) TLS 1.2 suites; TLS 1.3 suites are all AEAD.
BCP195_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
        "DHE-RSA-AES128-GCM-SHA256",
        "DHE-RSA-AES256-GCM-SHA384",
    )
)


@dataclass(frozen=True)
class TlsMaterial:
    """The archive's certificate chain and key, and the CA bundle peers must chain to.

    ``version`` names where it came from (a Secrets Manager version id), so a change is noticed.
    """

    certificate_chain_pem: str
    private_key_pem: str
    ca_bundle_pem: str
    version: str = ""


def _base(purpose: ssl.Purpose, material: TlsMaterial) -> ssl.SSLContext:
    protocol = ssl.PROTOCOL_TLS_SERVER if purpose is ssl.Purpose.CLIENT_AUTH else ssl.PROTOCOL_TLS_CLIENT
    context = ssl.SSLContext(protocol)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(BCP195_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    if hasattr(ssl, "OP_NO_RENEGOTIATION"):
        context.options |= ssl.OP_NO_RENEGOTIATION
    _load_chain(context, material)
    context.load_verify_locations(cadata=material.ca_bundle_pem)
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def server_context(material: TlsMaterial) -> ssl.SSLContext:
    """For the listeners: present the archive's certificate, require a client certificate."""
    return _base(ssl.Purpose.CLIENT_AUTH, material)


def client_context(material: TlsMaterial) -> ssl.SSLContext:
    """For outgoing connections: present the archive's certificate, verify the server's chain.

    Host names are not matched: customers' nodes are registered by address (often a VPN address
    their certificate does not name); the server certificate is instead bound to the organisation
    of the registered AE, like an incoming one (see docs/security.md).
    """
    context = _base(ssl.Purpose.SERVER_AUTH, material)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def _load_chain(context: ssl.SSLContext, material: TlsMaterial) -> None:
    # The ssl module loads a certificate and key only from files: a private directory, removed at once.
    with tempfile.TemporaryDirectory(prefix="archive-tls-") as directory:
        os.chmod(directory, 0o700)
        cert = os.path.join(directory, "chain.pem")
        key = os.path.join(directory, "key.pem")
        for path, text in ((cert, material.certificate_chain_pem), (key, material.private_key_pem)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(text)
        context.load_cert_chain(cert, key)
