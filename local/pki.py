"""A demo certificate authority for the local cloud and the tests: the archive's server
certificate and customers' client certificates (EC P-256, quick to make).

``make run`` writes its demo CA under ``.local-cloud/tls/`` (gitignored); tests make their own, plus
the certificates that must be refused (expired, from an unknown CA, of another organisation).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Issued:
    """A certificate and its key, as PEM, and where they were written."""

    certificate_pem: str
    key_pem: str
    cert_path: Path
    key_path: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")


def _pem_cert(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


class CertificateAuthority:
    """A CA that issues leaf certificates for servers and clients (both EKUs: a customer's PACS is
    a client calling the archive and a server the archive calls back)."""

    def __init__(self, directory: Path, name: str = "Demo Imaging Archive CA") -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.name = name
        self._key = _key()
        now = dt.datetime.now(dt.UTC)
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, name),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, name),
            ]
        )
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        self.certificate_pem = _pem_cert(self.certificate)
        self.cert_path = directory / "ca.pem"
        self.cert_path.write_text(self.certificate_pem)

    def issue(
        self,
        file_stem: str,
        *,
        common_name: str,
        organisation: str | None = None,
        organisation_oid: str | None = None,
        dns: tuple[str, ...] = (),
        ips: tuple[str, ...] = (),
        valid_days: int = 365,
        expired: bool = False,
        directory: Path | None = None,
    ) -> Issued:
        """A leaf certificate; ``organisation_oid`` goes in as SAN ``urn:oid:<oid>``; written to
        ``directory`` (default: the CA's)."""
        key = _key()
        now = dt.datetime.now(dt.UTC)
        if expired:
            not_before, not_after = now - dt.timedelta(days=30), now - dt.timedelta(days=1)
        else:
            not_before, not_after = now - dt.timedelta(minutes=5), now + dt.timedelta(days=valid_days)
        attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
        if organisation:
            attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation))
        alt_names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        alt_names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        if organisation_oid:
            alt_names.append(x509.UniformResourceIdentifier(f"urn:oid:{organisation_oid}"))
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attributes))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False
            )
        )
        if alt_names:
            builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        certificate = builder.sign(self._key, hashes.SHA256())
        out = directory or self.directory
        out.mkdir(parents=True, exist_ok=True)
        issued = Issued(
            _pem_cert(certificate), _pem_key(key), out / f"{file_stem}.pem", out / f"{file_stem}.key"
        )
        issued.cert_path.write_text(issued.certificate_pem)
        issued.key_path.touch(mode=0o600)
        issued.key_path.write_text(issued.key_pem)
        return issued

    def archive_server(self, file_stem: str = "archive") -> Issued:
        """The archive's own certificate (server for listeners, client for outgoing associations)."""
        return self.issue(
            file_stem,
            common_name="archive.local",
            organisation="National Imaging Archive",
            dns=("localhost", "archive.local"),
            ips=("127.0.0.1",),
        )


@dataclass(frozen=True)
class DemoPki:
    """What ``make run`` and the tests start with: a CA, the archive's certificate and the demo
    organisation's client certificate (its OID as SAN ``urn:oid:``)."""

    ca: CertificateAuthority
    archive: Issued
    demo_client: Issued

    @classmethod
    def create(cls, directory: Path, demo_org_oid: str) -> DemoPki:
        ca = CertificateAuthority(directory)
        archive = ca.archive_server()
        client = ca.issue(
            "demo-hospital",
            common_name="Demo Hospital PACS",
            organisation="Demo Hospital",
            organisation_oid=demo_org_oid,
            dns=("localhost",),
            ips=("127.0.0.1",),
        )
        return cls(ca, archive, client)

    def secret_value(self, extra_cas: tuple[str, ...] = ()) -> str:
        """The TLS secret: the archive's chain and key, and the CAs customers' certificates chain to."""
        from archive.data.secrets import tls_secret_value

        bundle = "".join((self.ca.certificate_pem, *extra_cas))
        return tls_secret_value(self.archive.certificate_pem, self.archive.key_pem, bundle)
