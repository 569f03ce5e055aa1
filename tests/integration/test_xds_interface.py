"""The XDS interface end to end over real HTTP against the local cloud: a study sent with DCMTK,
committed and registered as an XDS-I.b manifest is found with ITI-18, its manifest fetched with
ITI-43 and its images with RAD-69; XUA, hostile XML and disclosure rules over the wire.

Requests are built independently of the archive's codecs (lxml from the published sample, the demo
identity provider's minting tool); every response body is validated against XDSIB-all.xsd.
"""

from __future__ import annotations

import email.parser
import email.policy
from pathlib import Path

import pydicom
import pytest
import requests
from archive.data.models import AccessRecord, Registration
from archive.data.xds_access import DisclosureDenials
from lxml import etree

from local.cloud import DEMO_ARCHIVE, DEMO_ORG, LocalCloud
from local.demo_idp import (
    DEMO_IDP_DIR,
    DEMO_ISSUER,
    ensure_demo_idp,
    find_documents,
    mint_assertion,
    soap_request,
)
from tests.integration.test_registration import hetu, send_and_commit
from tests.support.cloud import wait_until
from tests.support.dicom import HETU_ISSUER, ct_dataset, new_uid, write

TESTDATA = Path("/work/shared/testdata/xds")
SCHEMA = etree.XMLSchema(etree.parse(str(TESTDATA / "wsdl/schema/IHE/XDSIB-all.xsd")))
SOAP = "http://www.w3.org/2003/05/soap-envelope"
WSA = "http://www.w3.org/2005/08/addressing"
RS = "urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0"
RIM = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"
AUDIENCE = f"urn:oid:{DEMO_ARCHIVE.oid}"
OTHER_ORG = "urn:oid:1.2.246.10.87654321.10"


def assertion(
    patient: str, *, org: str = f"urn:oid:{DEMO_ORG.oid}", purpose: str = "TREATMENT"
) -> etree._Element:
    provider = ensure_demo_idp()
    return mint_assertion(
        key_pem=(DEMO_IDP_DIR / "key.pem").read_bytes(),
        cert_pem=provider.certificates[0],
        issuer=DEMO_ISSUER,
        audience=AUDIENCE,
        patient=patient,
        organization_id=org,
        purpose=purpose,
    )


def post(
    cloud: LocalCloud, path: str, data: bytes, content_type: str = "application/soap+xml"
) -> requests.Response:
    return requests.post(
        f"{cloud.xds_url}{path}", data=data, headers={"Content-Type": content_type}, timeout=120
    )


def soap_body(response: requests.Response) -> etree._Element:
    envelope = etree.fromstring(response.content)
    body = envelope.find(f"{{{SOAP}}}Body")
    assert body is not None
    return body[0]


def fault_subcode(response: requests.Response) -> str:
    fault = soap_body(response)
    assert fault.tag == f"{{{SOAP}}}Fault", etree.tostring(fault)[:500]
    values = fault.findall(f".//{{{SOAP}}}Value")
    return values[-1].text or ""


@pytest.fixture(scope="module")
def study(cloud: LocalCloud, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A three-instance study of a fresh patient, committed and registered as a manifest."""
    workdir = tmp_path_factory.mktemp("xds-study")
    pid, study_uid, series_uid = hetu(), new_uid(), new_uid()
    datasets = [
        ct_dataset(patient_id=pid, study_uid=study_uid, series_uid=series_uid, instance_number=i + 1)
        for i in range(3)
    ]
    files = [write(ds, workdir) for ds in datasets]
    send_and_commit(cloud, files)
    state = wait_until(lambda: _registered(study_uid), timeout=90)
    return {
        "cx": f"{pid}^^^&{HETU_ISSUER}&ISO",
        "study_uid": study_uid,
        "series_uid": series_uid,
        "sops": [str(ds.SOPInstanceUID) for ds in datasets],
        "manifest_uid": state.manifest_uid,
        "patient_key": f"{pid}^^^{HETU_ISSUER}",
    }


def _registered(study_uid: str) -> Registration | None:
    try:
        item = Registration.get(study_uid, consistent_read=True)
    except Registration.DoesNotExist:
        return None
    return item if item.version and item.manifest_uid else None


def find(cloud: LocalCloud, patient: str, **kwargs: str) -> requests.Response:
    request = soap_request(
        find_documents(patient),
        action="urn:ihe:iti:2007:RegistryStoredQuery",
        assertion=assertion(patient, **kwargs),
    )
    return post(cloud, "/xds/registry", request)


def test_iti18_finds_the_manifest_and_logs_the_read(cloud: LocalCloud, study: dict[str, object]) -> None:
    # When the controlling organisation asks for the patient's documents
    response = find(cloud, str(study["cx"]))
    # Then the answer is a valid AdhocQueryResponse with the manifest, related to the request
    assert response.status_code == 200
    body = soap_body(response)
    SCHEMA.assertValid(body)
    assert body.get("status") == "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"
    unique_ids = {
        e.get("value")
        for e in body.iter(f"{{{RIM}}}ExternalIdentifier")
        if "uniqueId" in (e.findtext(f".//{{{RIM}}}LocalizedString") or "") or True
    }
    assert study["manifest_uid"] in unique_ids
    envelope = etree.fromstring(response.content)
    assert envelope.findtext(f".//{{{WSA}}}RelatesTo")
    # And the read is in the log, not as a disclosure, with purpose and message id
    [record] = [r for r in AccessRecord.query(str(study["patient_key"])) if r.operation == "ITI-18"][-1:]
    assert record.disclosure is False and record.org_oid == DEMO_ORG.oid
    assert study["manifest_uid"] in (record.instances or [])
    assert record.query_keys["purpose"] == "TREATMENT" and record.query_keys["message_id"].startswith(
        "urn:uuid:"
    )


def test_published_iti18_request_is_answered(cloud: LocalCloud, study: dict[str, object]) -> None:
    # Given the Swiss EPR sample with our patient and a fresh assertion of the demo IdP
    envelope = etree.parse(str(TESTDATA / "ITI-18_request_raw.xml")).getroot()
    security = envelope.find(
        ".//{http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd}Security"
    )
    assert security is not None
    for child in list(security):
        security.remove(child)
    security.append(assertion(str(study["cx"])))
    for value in envelope.iter(f"{{{RIM}}}Value"):
        if value.text and "^^^" in value.text and "ISO" in value.text:
            value.text = f"'{study['cx']}'"
    response = post(cloud, "/xds/registry", etree.tostring(envelope))
    # Then it is answered with a schema-valid response
    assert response.status_code == 200, response.text[:2000]
    body = soap_body(response)
    SCHEMA.assertValid(body)
    assert body.get("status").endswith("Success"), etree.tostring(body)[:2000]


def test_iti43_returns_the_manifest_bytes(cloud: LocalCloud, study: dict[str, object]) -> None:
    xdsb = "urn:ihe:iti:xds-b:2007"
    request = etree.Element(f"{{{xdsb}}}RetrieveDocumentSetRequest", nsmap={"xdsb": xdsb})
    for uid in (study["manifest_uid"], "1.2.3.4.5.6.404"):
        doc = etree.SubElement(request, f"{{{xdsb}}}DocumentRequest")
        etree.SubElement(doc, f"{{{xdsb}}}RepositoryUniqueId").text = DEMO_ARCHIVE.repository_unique_id
        etree.SubElement(doc, f"{{{xdsb}}}DocumentUniqueId").text = str(uid)
    data = soap_request(
        request, action="urn:ihe:iti:2007:RetrieveDocumentSet", assertion=assertion(str(study["cx"]))
    )
    response = post(cloud, "/xds/repository", data)
    assert response.status_code == 200
    parts = mime_parts(response)
    root = etree.fromstring(parts[0][1])
    body = root.find(f"{{{SOAP}}}Body")[0]  # type: ignore[index]
    assert body.find(f"{{{RS}}}RegistryResponse").get("status").endswith("PartialSuccess")  # type: ignore[union-attr]
    [error] = body.iter(f"{{{RS}}}RegistryError")
    assert error.get("errorCode") == "XDSDocumentUniqueIdError"
    manifest = pydicom.dcmread(__import__("io").BytesIO(parts[1][1]))
    assert manifest.SOPInstanceUID == study["manifest_uid"]
    assert manifest.StudyInstanceUID == study["study_uid"]


def mime_parts(response: requests.Response) -> list[tuple[str, bytes]]:
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + response.headers["Content-Type"].encode() + b"\r\n\r\n" + response.content
    )
    return [(p.get_content_type(), p.get_payload(decode=True)) for p in message.iter_parts()]


def rad69_request(study: dict[str, object], syntaxes: list[str]) -> etree._Element:
    xdsi, xdsb = "urn:ihe:rad:xdsi-b:2009", "urn:ihe:iti:xds-b:2007"
    request = etree.Element(
        f"{{{xdsi}}}RetrieveImagingDocumentSetRequest", nsmap={"xdsi": xdsi, "xdsb": xdsb}
    )
    st = etree.SubElement(request, f"{{{xdsi}}}StudyRequest", studyInstanceUID=str(study["study_uid"]))
    se = etree.SubElement(st, f"{{{xdsi}}}SeriesRequest", seriesInstanceUID=str(study["series_uid"]))
    for sop in study["sops"]:  # type: ignore[attr-defined]
        doc = etree.SubElement(se, f"{{{xdsb}}}DocumentRequest")
        etree.SubElement(doc, f"{{{xdsb}}}RepositoryUniqueId").text = DEMO_ARCHIVE.repository_unique_id
        etree.SubElement(doc, f"{{{xdsb}}}DocumentUniqueId").text = sop
    ts = etree.SubElement(request, f"{{{xdsi}}}TransferSyntaxUIDList")
    for syntax in syntaxes:
        etree.SubElement(ts, f"{{{xdsi}}}TransferSyntaxUID").text = syntax
    return request


def test_rad69_streams_every_instance_with_the_current_identity(
    cloud: LocalCloud, study: dict[str, object]
) -> None:
    data = soap_request(
        rad69_request(study, ["1.2.840.10008.1.2.1"]),
        action="urn:ihe:rad:2009:RetrieveImagingDocumentSet",
        assertion=assertion(str(study["cx"])),
    )
    response = post(cloud, "/xds/imaging", data)
    assert response.status_code == 200
    parts = mime_parts(response)
    assert [t for t, _ in parts[1:]] == ["application/dicom"] * 3
    got = [pydicom.dcmread(__import__("io").BytesIO(p)) for _, p in parts[1:]]
    assert [str(d.SOPInstanceUID) for d in got] == study["sops"]
    assert all(d.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1" for d in got)


def test_xua_and_hostile_xml_get_soap_faults(cloud: LocalCloud, study: dict[str, object]) -> None:
    cx = str(study["cx"])
    # no assertion
    assert (
        fault_subcode(
            post(
                cloud,
                "/xds/registry",
                soap_request(
                    find_documents(cx), action="urn:ihe:iti:2007:RegistryStoredQuery", assertion=None
                ),
            )
        )
        == "wsse:InvalidSecurity"
    )
    # tampered assertion
    signed = assertion(cx)
    for value in signed.iter("{urn:oasis:names:tc:SAML:2.0:assertion}AttributeValue"):
        if value.text == cx:
            value.text = "999999^^^&1.2.246.21&ISO"
    tampered = soap_request(
        find_documents(cx), action="urn:ihe:iti:2007:RegistryStoredQuery", assertion=signed
    )
    assert fault_subcode(post(cloud, "/xds/registry", tampered)) == "wsse:FailedCheck"
    # resource-id of another patient
    other = soap_request(
        find_documents(cx),
        action="urn:ihe:iti:2007:RegistryStoredQuery",
        assertion=assertion("999999^^^&1.2.246.21&ISO"),
    )
    assert fault_subcode(post(cloud, "/xds/registry", other)) == "wsse:FailedAuthentication"
    # missing MessageID
    no_id = etree.fromstring(
        soap_request(
            find_documents(cx), action="urn:ihe:iti:2007:RegistryStoredQuery", assertion=assertion(cx)
        )
    )
    header = no_id.find(f"{{{SOAP}}}Header")
    header.remove(header.find(f"{{{WSA}}}MessageID"))  # type: ignore[union-attr, arg-type]
    assert (
        fault_subcode(post(cloud, "/xds/registry", etree.tostring(no_id)))
        == "a:MessageAddressingHeaderRequired"
    )
    # XXE and billion laughs
    xxe = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>'
    laughs = b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;&a;">]><l>&b;</l>'
    for path in ("/xds/registry", "/xds/repository", "/xds/imaging"):
        for payload in (xxe, laughs):
            response = post(cloud, path, payload)
            assert response.status_code == 400 and soap_body(response).tag == f"{{{SOAP}}}Fault"
    # a 100 MB body
    big = b"<x>" + b"a" * (100 * 1024 * 1024) + b"</x>"
    for path in ("/xds/registry", "/xds/imaging"):
        response = post(cloud, path, big)
        assert response.status_code == 400 and soap_body(response).tag == f"{{{SOAP}}}Fault"


def test_other_organisation_needs_treatment_purpose_and_denials_hide(
    cloud: LocalCloud, study: dict[str, object]
) -> None:
    cx, key = str(study["cx"]), str(study["patient_key"])
    before = len([r for r in AccessRecord.query(key) if r.disclosure])
    # Given another organisation asking for research: nothing, and nothing disclosed
    response = find(cloud, cx, org=OTHER_ORG, purpose="RESEARCH")
    body = soap_body(response)
    SCHEMA.assertValid(body)
    assert list(body.iter(f"{{{RIM}}}ExtrinsicObject")) == []
    assert len([r for r in AccessRecord.query(key) if r.disclosure]) == before
    # When it asks for treatment it gets the manifest and the disclosure is logged
    body = soap_body(find(cloud, cx, org=OTHER_ORG, purpose="TREATMENT"))
    assert len(list(body.iter(f"{{{RIM}}}ExtrinsicObject"))) >= 1
    disclosed = [r for r in AccessRecord.query(key) if r.disclosure]
    assert len(disclosed) == before + 1
    assert (
        disclosed[-1].org_oid == OTHER_ORG.removeprefix("urn:oid:")
        and study["manifest_uid"] in disclosed[-1].instances
    )
    # And after the patient denies disclosure, even emergency access gets nothing
    DisclosureDenials().deny(cx)
    try:
        body = soap_body(find(cloud, cx, org=OTHER_ORG, purpose="EMERGENCY"))
        assert list(body.iter(f"{{{RIM}}}ExtrinsicObject")) == []
        own = soap_body(find(cloud, cx))
        assert len(list(own.iter(f"{{{RIM}}}ExtrinsicObject"))) >= 1
    finally:
        DisclosureDenials().withdraw(cx)
