"""A throw-away identity provider for tests: an RSA key and a self-signed certificate made with
the cryptography package, and SAML 2.0 assertions signed with signxml like a real STS signs them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from archive.model.xua import IdentityProvider
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from lxml import etree
from signxml import XMLSigner
from signxml.algorithms import CanonicalizationMethod

from local.demo_idp import coded_value, saml_attribute

SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
DS = "http://www.w3.org/2000/09/xmldsig#"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
AUDIENCE = "urn:oid:1.2.246.10.99999999.1"


@dataclass(frozen=True)
class TestIdentityProvider:
    issuer: str
    key_pem: bytes
    cert_pem: bytes

    @property
    def registration(self) -> IdentityProvider:
        return IdentityProvider(self.issuer, (self.cert_pem.decode("ascii"),))


def make_identity_provider(issuer: str = "https://idp.test.example/sts") -> TestIdentityProvider:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test identity provider")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return TestIdentityProvider(
        issuer,
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        cert.public_bytes(serialization.Encoding.PEM),
    )


def make_assertion(
    idp: TestIdentityProvider,
    *,
    resource_id: str = "020516C903K^^^&1.2.246.21&ISO",
    organization_id: str = "urn:oid:1.2.246.10.12345678.10",
    purpose: str = "TREATMENT",
    audience: str = AUDIENCE,
    issued: datetime | None = None,
    lifetime: timedelta = timedelta(minutes=5),
    sign: bool = True,
    issuer: str | None = None,
) -> etree._Element:
    """A saml2:Assertion with the XUA attributes, signed (enveloped, RSA-SHA256, exclusive c14n)."""
    issued = issued or datetime.now(UTC)
    stamp = "%Y-%m-%dT%H:%M:%S.000Z"
    assertion_id = f"_{uuid.uuid4()}"
    a = etree.Element(
        f"{{{SAML}}}Assertion",
        ID=assertion_id,
        IssueInstant=issued.strftime(stamp),
        Version="2.0",
        nsmap={"saml2": SAML},
    )
    etree.SubElement(a, f"{{{SAML}}}Issuer").text = issuer or idp.issuer
    if sign:
        # Where the Signature goes (after Issuer, as the SAML schema orders it), with the ds prefix
        # signxml uses inside, so no serializer has to reconcile two prefixes for one namespace.
        etree.SubElement(a, f"{{{DS}}}Signature", Id="placeholder", nsmap={"ds": DS})
    subject = etree.SubElement(a, f"{{{SAML}}}Subject")
    etree.SubElement(subject, f"{{{SAML}}}NameID").text = "dr.house@hospital.example"
    conditions = etree.SubElement(
        a,
        f"{{{SAML}}}Conditions",
        NotBefore=(issued - timedelta(seconds=1)).strftime(stamp),
        NotOnOrAfter=(issued + lifetime).strftime(stamp),
    )
    etree.SubElement(
        etree.SubElement(conditions, f"{{{SAML}}}AudienceRestriction"), f"{{{SAML}}}Audience"
    ).text = audience
    statement = etree.SubElement(a, f"{{{SAML}}}AttributeStatement")
    saml_attribute(statement, "urn:oasis:names:tc:xspa:1.0:subject:subject-id", "Gregory House")
    saml_attribute(statement, "urn:oasis:names:tc:xspa:1.0:subject:organization", "Demo Hospital")
    saml_attribute(statement, "urn:oasis:names:tc:xspa:1.0:subject:organization-id", organization_id)
    saml_attribute(
        statement,
        "urn:oasis:names:tc:xacml:2.0:subject:role",
        coded_value("Role", "46255001", "2.16.840.1.113883.6.96", "Pharmacist"),
    )
    saml_attribute(
        statement,
        "urn:oasis:names:tc:xspa:1.0:subject:purposeofuse",
        coded_value("PurposeOfUse", purpose, "2.16.840.1.113883.3.18.7.1", purpose.title()),
    )
    saml_attribute(statement, "urn:oasis:names:tc:xacml:2.0:resource:resource-id", resource_id)
    saml_attribute(statement, "urn:ihe:iti:xca:2010:homeCommunityId", "urn:oid:1.2.246.10.99999999")
    if not sign:
        return a
    signed = XMLSigner(
        signature_algorithm="rsa-sha256",
        digest_algorithm="sha256",
        c14n_algorithm=CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0,
    ).sign(
        a, key=idp.key_pem, cert=idp.cert_pem.decode("ascii"), reference_uri=assertion_id, id_attribute="ID"
    )
    return signed


def security_header(assertion: etree._Element | None) -> etree._Element:
    security = etree.Element(f"{{{WSSE}}}Security", nsmap={"wsse": WSSE})
    if assertion is not None:
        security.append(assertion)
    return security
