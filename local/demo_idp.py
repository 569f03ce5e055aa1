"""The local cloud's demo identity provider (XUA): a key and a self-signed certificate in
``.local-cloud/demo-idp/``, registered as trusted by ``make run``, and a tool that mints signed
SAML 2.0 assertions and whole ITI-18 requests with them:

    python -m local.demo_idp iti18 --patient '020516C903K^^^&1.2.246.21&ISO' > request.xml
    curl -s -H 'Content-Type: application/soap+xml' --data-binary @request.xml http://127.0.0.1:8080/xds/registry
"""

from __future__ import annotations

import argparse
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from archive.model.xua import IdentityProvider
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from lxml import etree
from signxml import XMLSigner
from signxml.algorithms import CanonicalizationMethod

ROOT = Path(__file__).resolve().parent.parent
DEMO_IDP_DIR = ROOT / ".local-cloud" / "demo-idp"
DEMO_ISSUER = "https://idp.local.archive/demo"
SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
DS = "http://www.w3.org/2000/09/xmldsig#"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
SOAP = "http://www.w3.org/2003/05/soap-envelope"
WSA = "http://www.w3.org/2005/08/addressing"


def ensure_demo_idp(directory: Path = DEMO_IDP_DIR) -> IdentityProvider:
    """Create key.pem and cert.pem once; return the provider to register."""
    key_file, cert_file = directory / "key.pem", directory / "cert.pem"
    if not (key_file.exists() and cert_file.exists()):
        directory.mkdir(parents=True, exist_ok=True)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "local archive demo identity provider")])
        now = datetime.now(UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=365))
            .sign(key, hashes.SHA256())
        )
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        key_file.chmod(0o600)
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return IdentityProvider(DEMO_ISSUER, (cert_file.read_text("ascii"),))


def saml_attribute(statement: etree._Element, name: str, value: str | etree._Element) -> None:
    holder = etree.SubElement(
        etree.SubElement(statement, f"{{{SAML}}}Attribute", Name=name), f"{{{SAML}}}AttributeValue"
    )
    if isinstance(value, str):
        holder.text = value
    else:
        holder.append(value)


def coded_value(local: str, code: str, system: str, display: str) -> etree._Element:
    return etree.Element(
        f"{{urn:hl7-org:v3}}{local}",
        code=code,
        codeSystem=system,
        displayName=display,
        nsmap={None: "urn:hl7-org:v3"},
    )


def mint_assertion(
    *,
    key_pem: bytes,
    cert_pem: str,
    issuer: str,
    audience: str,
    patient: str,
    organization_id: str,
    subject: str = "Demo User",
    purpose: str = "TREATMENT",
    lifetime: timedelta = timedelta(minutes=5),
    now: datetime | None = None,
) -> etree._Element:
    """A signed saml2:Assertion with the XUA attributes (RSA-SHA256, exclusive c14n, enveloped)."""
    now = now or datetime.now(UTC)
    stamp = "%Y-%m-%dT%H:%M:%S.000Z"
    assertion_id = f"_{uuid.uuid4()}"
    a = etree.Element(
        f"{{{SAML}}}Assertion",
        ID=assertion_id,
        IssueInstant=now.strftime(stamp),
        Version="2.0",
        nsmap={"saml2": SAML},
    )
    etree.SubElement(a, f"{{{SAML}}}Issuer").text = issuer
    etree.SubElement(a, f"{{{DS}}}Signature", Id="placeholder", nsmap={"ds": DS})
    etree.SubElement(etree.SubElement(a, f"{{{SAML}}}Subject"), f"{{{SAML}}}NameID").text = subject
    conditions = etree.SubElement(
        a,
        f"{{{SAML}}}Conditions",
        NotBefore=(now - timedelta(seconds=1)).strftime(stamp),
        NotOnOrAfter=(now + lifetime).strftime(stamp),
    )
    etree.SubElement(
        etree.SubElement(conditions, f"{{{SAML}}}AudienceRestriction"), f"{{{SAML}}}Audience"
    ).text = audience
    statement = etree.SubElement(a, f"{{{SAML}}}AttributeStatement")
    saml_attribute(statement, "urn:oasis:names:tc:xspa:1.0:subject:subject-id", subject)
    saml_attribute(statement, "urn:oasis:names:tc:xspa:1.0:subject:organization-id", organization_id)
    saml_attribute(
        statement,
        "urn:oasis:names:tc:xspa:1.0:subject:purposeofuse",
        coded_value("PurposeOfUse", purpose, "2.16.840.1.113883.5.8", purpose.title()),
    )
    saml_attribute(statement, "urn:oasis:names:tc:xacml:2.0:resource:resource-id", patient)
    return XMLSigner(
        signature_algorithm="rsa-sha256",
        digest_algorithm="sha256",
        c14n_algorithm=CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0,
    ).sign(a, key=key_pem, cert=cert_pem, reference_uri=assertion_id, id_attribute="ID")


def soap_request(body: etree._Element, *, action: str, assertion: etree._Element | None) -> bytes:
    """A SOAP 1.2 request with wsa:Action, wsa:MessageID and the assertion in wsse:Security."""
    env = etree.Element(f"{{{SOAP}}}Envelope", nsmap={"s": SOAP, "a": WSA})
    header = etree.SubElement(env, f"{{{SOAP}}}Header")
    etree.SubElement(header, f"{{{WSA}}}Action").text = action
    etree.SubElement(header, f"{{{WSA}}}MessageID").text = f"urn:uuid:{uuid.uuid4()}"
    if assertion is not None:
        etree.SubElement(header, f"{{{WSSE}}}Security", nsmap={"wsse": WSSE}).append(assertion)
    etree.SubElement(env, f"{{{SOAP}}}Body").append(body)
    return bytes(etree.tostring(env, xml_declaration=True, encoding="UTF-8"))


def find_documents(patient: str) -> etree._Element:
    """The body of an ITI-18 FindDocuments (Approved documents of one patient, LeafClass)."""
    query_ns, rim = (
        "urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0",
        "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0",
    )
    request = etree.Element(f"{{{query_ns}}}AdhocQueryRequest", nsmap={"query": query_ns, "rim": rim})
    etree.SubElement(
        request, f"{{{query_ns}}}ResponseOption", returnType="LeafClass", returnComposedObjects="true"
    )
    query = etree.SubElement(
        request, f"{{{rim}}}AdhocQuery", id="urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d"
    )
    for name, value in (
        ("$XDSDocumentEntryPatientId", f"'{patient}'"),
        ("$XDSDocumentEntryStatus", "('urn:oasis:names:tc:ebxml-regrep:StatusType:Approved')"),
    ):
        slot = etree.SubElement(query, f"{{{rim}}}Slot", name=name)
        etree.SubElement(etree.SubElement(slot, f"{{{rim}}}ValueList"), f"{{{rim}}}Value").text = value
    return request


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m local.demo_idp", description="mint XUA assertions (demo IdP)")
    p.add_argument("what", choices=["assertion", "iti18"])
    p.add_argument("--patient", required=True, help="resource-id, e.g. '020516C903K^^^&1.2.246.21&ISO'")
    p.add_argument("--organization-id", default="urn:oid:1.2.246.10.12345678.10")
    p.add_argument("--audience", default="urn:oid:1.2.246.10.12345678.99", help="the archive (its OID)")
    p.add_argument("--purpose", default="TREATMENT")
    args = p.parse_args(argv)
    provider = ensure_demo_idp()
    assertion = mint_assertion(
        key_pem=(DEMO_IDP_DIR / "key.pem").read_bytes(),
        cert_pem=provider.certificates[0],
        issuer=DEMO_ISSUER,
        audience=args.audience,
        patient=args.patient,
        organization_id=args.organization_id,
        purpose=args.purpose,
    )
    if args.what == "assertion":
        sys.stdout.buffer.write(etree.tostring(assertion))
    else:
        request = find_documents(args.patient)
        sys.stdout.buffer.write(
            soap_request(request, action="urn:ihe:iti:2007:RegistryStoredQuery", assertion=assertion)
        )


if __name__ == "__main__":
    main()
