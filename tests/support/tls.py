"""Certificates for the TLS tests: a customer organisation's valid certificate from the archive's
trusted (demo) CA, and the ones that must be refused: expired, from an unknown CA, another
organisation's. Plus SSL contexts for pynetdicom and Python clients."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from local.cloud import LocalCloud
from local.pki import CertificateAuthority, Issued


@dataclass(frozen=True)
class CustomerCertificates:
    valid: Issued
    expired: Issued
    other_organisation: Issued
    unknown_ca: Issued
    ca_path: Path  # the archive's CA: what a customer configures to verify the archive


def customer_certificates(
    cloud: LocalCloud, directory: Path, org_oid: str, other_oid: str
) -> CustomerCertificates:
    assert cloud.pki is not None
    ca = cloud.pki.ca
    stranger_ca = CertificateAuthority(directory / "unknown-ca", name="Unknown CA")

    def issue(authority: CertificateAuthority, stem: str, oid: str, *, expired: bool = False) -> Issued:
        return authority.issue(
            stem,
            common_name=f"{stem}.customer.test",
            organisation="Customer",
            organisation_oid=oid,
            ips=("127.0.0.1",),
            expired=expired,
            directory=directory,
        )

    return CustomerCertificates(
        valid=issue(ca, "valid", org_oid),
        expired=issue(ca, "expired", org_oid, expired=True),
        other_organisation=issue(ca, "other-org", other_oid),
        unknown_ca=issue(stranger_ca, "unknown-ca", org_oid),
        ca_path=ca.cert_path,
    )


def client_context(issued: Issued, ca_path: Path) -> ssl.SSLContext:
    """A client context presenting ``issued`` and trusting the archive's CA."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_path))
    context.check_hostname = False
    context.load_cert_chain(str(issued.cert_path), str(issued.key_path))
    return context


def server_context(issued: Issued, ca_path: Path) -> ssl.SSLContext:
    """A server context (a customer's node the archive calls) requiring the archive's certificate."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(ca_path))
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_cert_chain(str(issued.cert_path), str(issued.key_path))
    return context
