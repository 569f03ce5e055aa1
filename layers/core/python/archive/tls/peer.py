"""A peer's certificate as an ``archive.model.certificates.CertificateIdentity``.

From a live TLS socket (``ssl.SSLSocket.getpeercert``) and from PEM text, as API Gateway passes
the client certificate of a mutual-TLS request to the Lambda (``requestContext.identity.clientCert``).
"""

from __future__ import annotations

import hashlib
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from archive.model.certificates import CertificateIdentity

# getpeercert() subject keys (OpenSSL long names) -> how names are written in the registry.
_SUBJECT_KEYS = {
    "commonName": "CN",
    "organizationName": "O",
    "organizationIdentifier": "organizationIdentifier",
    "serialNumber": "serialNumber",
}
_OID_KEYS = {
    NameOID.COMMON_NAME: "CN",
    NameOID.ORGANIZATION_NAME: "O",
    NameOID.ORGANIZATION_IDENTIFIER: "organizationIdentifier",
    NameOID.SERIAL_NUMBER: "serialNumber",
}
_SAN_KEYS = {"DNS": "DNS", "URI": "URI", "IP Address": "IP", "email": "email"}


def _rdns(value: Any) -> str:
    return ",".join(f"{k}={v}" for rdn in value or () for k, v in rdn)


def identity_from_peercert(peercert: dict[str, Any], der: bytes | None = None) -> CertificateIdentity:
    """From ``SSLSocket.getpeercert()`` (and ``getpeercert(binary_form=True)`` for the fingerprint)."""
    names = set()
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key in _SUBJECT_KEYS:
                names.add(f"{_SUBJECT_KEYS[key]}={value}")
    for kind, value in peercert.get("subjectAltName", ()):
        if kind in _SAN_KEYS:
            names.add(f"{_SAN_KEYS[kind]}:{str(value).strip()}")
    return CertificateIdentity(
        frozenset(names),
        subject=_rdns(peercert.get("subject")),
        issuer=_rdns(peercert.get("issuer")),
        serial_number=str(peercert.get("serialNumber", "")),
        fingerprint_sha256=hashlib.sha256(der).hexdigest() if der else "",
    )


def identity_from_pem(pem: str) -> CertificateIdentity:
    """From a PEM certificate (the first one, if a chain is given)."""
    certificate = x509.load_pem_x509_certificate(pem.encode("ascii"))
    names = set()
    for attribute in certificate.subject:
        key = _OID_KEYS.get(attribute.oid)
        if key:
            names.add(f"{key}={attribute.value!s}")
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = None
    if san is not None:
        names.update(f"DNS:{v}" for v in san.get_values_for_type(x509.DNSName))
        names.update(f"URI:{v}" for v in san.get_values_for_type(x509.UniformResourceIdentifier))
        names.update(f"IP:{v}" for v in san.get_values_for_type(x509.IPAddress))
        names.update(f"email:{v}" for v in san.get_values_for_type(x509.RFC822Name))
    der = certificate.public_bytes(serialization.Encoding.DER)
    return CertificateIdentity(
        frozenset(names),
        subject=certificate.subject.rfc4514_string(),
        issuer=certificate.issuer.rfc4514_string(),
        serial_number=format(certificate.serial_number, "X"),
        fingerprint_sha256=hashlib.sha256(der).hexdigest(),
    )


def identity_of_socket(sock: Any) -> CertificateIdentity | None:
    """The peer certificate of a TLS socket, or None for a plain socket or no certificate."""
    getpeercert = getattr(sock, "getpeercert", None)
    if getpeercert is None:
        return None
    peercert = getpeercert()
    if not peercert:
        return None
    return identity_from_peercert(peercert, getpeercert(binary_form=True))


def tls_failure(exc: BaseException) -> str:
    """Why a handshake failed: OpenSSL's reason and, for a refused certificate, the verification
    error (unable to get local issuer certificate, certificate has expired, ...)."""
    parts = [getattr(exc, "reason", None), getattr(exc, "verify_message", None)]
    return ": ".join(str(p) for p in parts if p) or str(exc) or type(exc).__name__
