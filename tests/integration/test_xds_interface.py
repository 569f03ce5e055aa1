"""The XDS interface end to end over real HTTP against the local cloud: a study sent with DCMTK,
committed and registered as an XDS-I.b manifest is found with ITI-18, its manifest fetched with
ITI-43 and its images with RAD-69; XUA, hostile XML and disclosure rules over the wire.

Requests are built independently of the archive's codecs (lxml from the published sample, the demo
identity provider's minting tool); every response body is validated against XDSIB-all.xsd.
"""

from __future__ import annotations

import email.parser
import email.policy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests
from archive.data.models import AccessRecord, Patient, Registration
from archive.data.xds_access import DisclosureDenials
from archive.services.disclosure import build_disclosure_log
from lxml import etree

from local.cloud import DEMO_ARCHIVE, DEMO_DOMAIN, DEMO_ORG, LocalCloud
from local.demo_idp import (
    DEMO_IDP_DIR,
    DEMO_ISSUER,
    ensure_demo_idp,
    find_documents,
    mint_assertion,
    soap_request,
)
from local.pki import Issued
from tests.integration.test_registration import hetu, send_and_commit
from tests.support.audit import assert_valid, records, wait_for_record
from tests.support.cloud import storescu, wait_until
from tests.support.dicom import HETU_ISSUER, ct_dataset, new_uid, write
from tests.support.tls import customer_certificates
from tests.support.xds_http import (
    APND,
    APPROVED,
    FAILURE,
    HAS_MEMBER,
    PUBLISHED_CODES,
    STUDY_UID_REFERENCE,
    SUCCESS,
    ZeepXdsClient,
    associations,
    error_codes,
    many_reports_submission,
    object_refs,
    published_submission,
    unique_ids,
)

TESTDATA = Path("/work/shared/testdata/xds")
SCHEMA = etree.XMLSchema(etree.parse(str(TESTDATA / "wsdl/schema/IHE/XDSIB-all.xsd")))
SOAP = "http://www.w3.org/2003/05/soap-envelope"
WSA = "http://www.w3.org/2005/08/addressing"
RS = "urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0"
RIM = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"
QUERY_NS = "urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0"
AUDIENCE = f"urn:oid:{DEMO_ARCHIVE.oid}"
OTHER_ORG = "urn:oid:1.2.246.10.87654321.10"


def assertion(
    patient: str,
    *,
    org: str = f"urn:oid:{DEMO_ORG.oid}",
    purpose: str = "TREATMENT",
    subject: str = "Demo User",
) -> etree._Element:
    provider = ensure_demo_idp()
    return mint_assertion(
        subject=subject,
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


def soap_body(response: requests.Response | bytes) -> etree._Element:
    envelope = etree.fromstring(response if isinstance(response, bytes) else response.content)
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
    assert study["manifest_uid"] in unique_ids(body)
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
    # and is an entry of the patient's hash-chained disclosure log, intact
    chain = build_disclosure_log(cloud.settings)  # type: ignore[arg-type]
    [entry] = [
        r
        for r in chain.report(key)
        if r["channel"] == "ITI-18" and r["recipient_org_oid"] == OTHER_ORG.removeprefix("urn:oid:")
    ]
    assert entry["kind"] == "XDS"
    assert entry["controller_oid"] == DEMO_ORG.oid and entry["purpose_of_use"] == "TREATMENT"
    assert study["manifest_uid"] in entry["documents"]
    assert all(v.intact for v in chain.verify(key))
    # And after the patient denies disclosure, even emergency access gets nothing
    DisclosureDenials().deny(cx)
    try:
        body = soap_body(find(cloud, cx, org=OTHER_ORG, purpose="EMERGENCY"))
        assert list(body.iter(f"{{{RIM}}}ExtrinsicObject")) == []
        own = soap_body(find(cloud, cx))
        assert len(list(own.iter(f"{{{RIM}}}ExtrinsicObject"))) >= 1
    finally:
        DisclosureDenials().withdraw(cx)


# --- ITI-42 from the patient data repository, and every stored query from an independent client ---

REPOSITORY_ORG = "1.2.246.10.55555555.10"  # the national patient data repository (an organisation)
REPOSITORY_UID = "1.2.246.10.55555555.2"
ITI42_ACTION = "urn:ihe:iti:2007:RegisterDocumentSet-b"


@pytest.fixture(scope="module")
def zeep_client(cloud: LocalCloud) -> ZeepXdsClient:
    return ZeepXdsClient(cloud.xds_url)


@pytest.fixture(scope="module")
def repository(cloud: LocalCloud) -> str:
    """The patient data repository, registered with the admin CLI with the published sample's codes."""
    codes = [f"--code={attribute}={code}" for attribute, values in PUBLISHED_CODES.items() for code in values]
    result = subprocess.run(
        [sys.executable, "-m", "admin", "--endpoint", cloud.endpoint, "xds-access", "repository-set",
         REPOSITORY_ORG, "--repository-unique-id", REPOSITORY_UID, *codes],
        capture_output=True, text=True, timeout=60, env=cloud.env(),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return REPOSITORY_ORG


def register(
    cloud: LocalCloud, submission: etree._Element, patient: str, org: str = REPOSITORY_ORG
) -> etree._Element:
    data = soap_request(submission, action=ITI42_ACTION, assertion=assertion(patient, org=f"urn:oid:{org}"))
    response = post(cloud, "/xds/registry", data)
    assert response.status_code == 200, response.text[:2000]
    body = soap_body(response)
    SCHEMA.assertValid(body)
    assert etree.fromstring(response.content).findtext(f".//{{{WSA}}}RelatesTo")
    return body


@pytest.fixture(scope="module")
def report(
    cloud: LocalCloud, study: dict[str, object], repository: str, zeep_client: ZeepXdsClient
) -> dict[str, str]:
    """The published ITI-42 submission registered for the study's patient as an addendum of its manifest."""
    cx = str(study["cx"])
    found = soap_body(zeep_client.stored_query("FindDocuments", [
        ("$XDSDocumentEntryPatientId", [f"'{cx}'"]), ("$XDSDocumentEntryStatus", [APPROVED])
    ], assertion=assertion(cx)).content)  # fmt: skip
    manifest_uuid = unique_ids(found)[str(study["manifest_uid"])]
    submission, ids = published_submission(
        patient=cx,
        repository_unique_id=REPOSITORY_UID,
        study_uid=str(study["study_uid"]),
        append_to=manifest_uuid,
    )
    body = register(cloud, submission, cx)
    assert body.get("status") == SUCCESS, etree.tostring(body)[:3000]
    return {**ids, "manifest_uuid": manifest_uuid}


def answered(response: requests.Response, status: str = SUCCESS) -> etree._Element:
    """The schema-valid AdhocQueryResponse of a 200 answer with the expected status."""
    assert response.status_code == 200, response.text[:2000]
    body = soap_body(response)
    SCHEMA.assertValid(body)
    assert body.tag == f"{{{QUERY_NS}}}AdhocQueryResponse"
    assert body.get("status") == status, etree.tostring(body)[:3000]
    return body


def test_iti42_published_submission_is_found_with_the_manifest(
    cloud: LocalCloud, study: dict[str, object], report: dict[str, str], zeep_client: ZeepXdsClient
) -> None:
    cx, manifest = str(study["cx"]), str(study["manifest_uid"])
    both = {manifest, report["document"]}
    me = assertion(cx)
    # FindDocuments by patient and class (the manifest's imaging class OR the report's class)
    body = answered(zeep_client.stored_query("FindDocuments", [
        ("$XDSDocumentEntryPatientId", [f"'{cx}'"]),
        ("$XDSDocumentEntryStatus", [APPROVED]),
        ("$XDSDocumentEntryClassCode", [
            f"('IMG^^{DEMO_DOMAIN.codes.class_code.scheme}','History and Physical^^Connect-a-thon classCodes')"
        ]),
    ], assertion=me))  # fmt: skip
    assert both <= set(unique_ids(body))
    # one class alone finds one of them
    body = answered(zeep_client.stored_query("FindDocuments", [
        ("$XDSDocumentEntryPatientId", [f"'{cx}'"]), ("$XDSDocumentEntryStatus", [APPROVED]),
        ("$XDSDocumentEntryClassCode", ["('History and Physical^^Connect-a-thon classCodes')"]),
    ], assertion=me))  # fmt: skip
    assert set(unique_ids(body)) == {report["document"]}
    # FindDocumentsByReferenceId by the Study Instance UID
    body = answered(zeep_client.stored_query("FindDocumentsByReferenceId", [
        ("$XDSDocumentEntryPatientId", [f"'{cx}'"]), ("$XDSDocumentEntryStatus", [APPROVED]),
        ("$XDSDocumentEntryReferenceIdList", [f"('{study['study_uid']}^^^^{STUDY_UID_REFERENCE}')"]),
    ], assertion=me))  # fmt: skip
    assert set(unique_ids(body)) == both
    # GetRelatedDocuments from the manifest finds the report appended to it
    body = answered(zeep_client.stored_query("GetRelatedDocuments", [
        ("$XDSDocumentEntryUniqueId", [f"'{manifest}'"]), ("$AssociationTypes", [f"('{APND}')"]),
    ], assertion=me))  # fmt: skip
    ids = unique_ids(body)
    assert set(ids) == both
    assert (APND, ids[report["document"]], report["manifest_uuid"]) in associations(body)
    # And the report, controlled by the repository, is a disclosure to the hospital: logged as one
    [record] = [r for r in AccessRecord.query(str(study["patient_key"])) if r.operation == "ITI-18"
                and r.disclosure and report["document"] in (r.instances or [])][-1:]  # fmt: skip
    assert record.org_oid == DEMO_ORG.oid


def test_iti42_refusals_leave_nothing_behind(
    cloud: LocalCloud, study: dict[str, object], repository: str, zeep_client: ZeepXdsClient
) -> None:
    cx = str(study["cx"])
    # A caller that is not a registered repository
    submission, ids = published_submission(
        patient=cx, repository_unique_id=REPOSITORY_UID, study_uid=str(study["study_uid"]), append_to=None
    )
    body = register(cloud, submission, cx, org=DEMO_ORG.oid)
    assert body.get("status") == FAILURE and error_codes(body) == ["XDSRegistryError"]
    # A patient the archive does not know, and a repositoryUniqueId that is not the caller's
    unknown = f"{hetu()}^^^&{HETU_ISSUER}&ISO"
    submission, ids = published_submission(
        patient=unknown, repository_unique_id="1.2.3.4.5", study_uid=str(study["study_uid"]), append_to=None
    )
    body = register(cloud, submission, unknown)
    assert body.get("status") == FAILURE
    assert set(error_codes(body)) == {"XDSUnknownPatientId", "XDSUnknownRepositoryId"}
    # Then none of the refused documents is registered
    body = answered(zeep_client.stored_query("GetDocuments", [
        ("$XDSDocumentEntryUniqueId", [f"('{ids['document']}')"])
    ], assertion=assertion(unknown), return_type="ObjectRef"))  # fmt: skip
    assert object_refs(body) == set()


def test_every_stored_query_from_zeep(
    cloud: LocalCloud, study: dict[str, object], report: dict[str, str], zeep_client: ZeepXdsClient
) -> None:
    """Each stored query once over HTTP, built by zeep from iti18.wsdl; each answer schema-valid."""
    cx, me = str(study["cx"]), assertion(str(study["cx"]))
    manifest, document = str(study["manifest_uid"]), report["document"]
    statuses = [("$XDSDocumentEntryStatus", [APPROVED]), ("$XDSSubmissionSetStatus", [APPROVED]),
                ("$XDSFolderStatus", [APPROVED])]  # fmt: skip

    def query(name: str, *slots: tuple[str, list[str]], return_type: str = "LeafClass") -> etree._Element:
        return answered(zeep_client.stored_query(name, slots, assertion=me, return_type=return_type))

    everything = query("GetAll", ("$patientId", [f"'{cx}'"]), *statuses)
    ids = unique_ids(everything)
    assert {manifest, document, report["submission_set"]} <= set(ids)
    report_uuid, set_uuid = ids[document], ids[report["submission_set"]]
    sets = query("FindSubmissionSets", ("$XDSSubmissionSetPatientId", [f"'{cx}'"]), statuses[1])
    assert (
        report["submission_set"] in unique_ids(sets) and len(unique_ids(sets)) == 2
    )  # manifest's and report's
    docs = query("GetDocuments", ("$XDSDocumentEntryUniqueId", [f"('{manifest}','{document}')"]))
    assert set(unique_ids(docs)) == {manifest, document}
    refs = query(
        "GetDocuments", ("$XDSDocumentEntryEntryUUID", [f"('{report_uuid}')"]), return_type="ObjectRef"
    )
    assert object_refs(refs) == {report_uuid}
    with_assocs = query("GetDocumentsAndAssociations", ("$XDSDocumentEntryUniqueId", [f"('{document}')"]))
    assert {(HAS_MEMBER, set_uuid, report_uuid), (APND, report_uuid, report["manifest_uuid"])} <= set(
        associations(with_assocs)
    )
    only_assocs = query("GetAssociations", ("$uuid", [f"('{report_uuid}')"]))
    assert set(associations(only_assocs)) == set(associations(with_assocs))
    assert not list(only_assocs.iter(f"{{{RIM}}}ExtrinsicObject"))
    owning = query("GetSubmissionSets", ("$uuid", [f"('{report_uuid}')"]))
    assert set(unique_ids(owning)) == {report["submission_set"]}
    contents = query(
        "GetSubmissionSetAndContents", ("$XDSSubmissionSetUniqueId", [f"'{report['submission_set']}'"])
    )
    assert set(unique_ids(contents)) == {report["submission_set"], document}
    related = query("GetRelatedDocuments", ("$XDSDocumentEntryEntryUUID", [f"'{report_uuid}'"]),
                    ("$AssociationTypes", [f"('{APND}')"]))  # fmt: skip
    assert set(unique_ids(related)) == {manifest, document}
    by_reference = query("FindDocumentsByReferenceId", ("$XDSDocumentEntryPatientId", [f"'{cx}'"]), statuses[0],
                         ("$XDSDocumentEntryReferenceIdList", [f"('{study['study_uid']}^^^^{STUDY_UID_REFERENCE}')"]))  # fmt: skip
    assert set(unique_ids(by_reference)) == {manifest, document}


@pytest.fixture(scope="module")
def many(cloud: LocalCloud, tmp_path_factory: pytest.TempPathFactory, repository: str) -> dict[str, object]:
    """A patient known from one image, with 21 reports (over the LeafClass limit of 20) and a Folder
    holding two of them, registered in one ITI-42 submission."""
    pid = hetu()
    cx = f"{pid}^^^&{HETU_ISSUER}&ISO"
    files = [
        write(
            ct_dataset(patient_id=pid, study_uid=new_uid(), series_uid=new_uid()),
            tmp_path_factory.mktemp("one"),
        )
    ]
    assert storescu(cloud, files).returncode == 0
    # The patient is known once the index has the image's identity
    wait_until(lambda: _patient_known(f"{pid}^^^{HETU_ISSUER}"), timeout=60)
    submission, ids = many_reports_submission(
        patient=cx, repository_unique_id=REPOSITORY_UID, count=21, in_folder=2
    )
    body = register(cloud, submission, cx)
    assert body.get("status") == SUCCESS, etree.tostring(body)[:3000]
    return {"cx": cx, **ids}


def _patient_known(key: str) -> bool:
    try:
        Patient.get(key, consistent_read=True)
    except Patient.DoesNotExist:
        return False
    return True


def test_folder_queries_and_the_leaf_class_limit(many: dict[str, object], zeep_client: ZeepXdsClient) -> None:
    cx = str(many["cx"])
    me = assertion(cx)
    documents = list(many["documents"])  # type: ignore[call-overload]
    folder_uid = str(many["folder"])
    # Then FindFolders, GetFolders, GetFolderAndContents and GetFoldersForDocument find the folder
    folders = answered(zeep_client.stored_query("FindFolders", [
        ("$XDSFolderPatientId", [f"'{cx}'"]), ("$XDSFolderStatus", [APPROVED])], assertion=me))  # fmt: skip
    folder_uuid = unique_ids(folders)[folder_uid]
    got = answered(
        zeep_client.stored_query(
            "GetFolders", [("$XDSFolderEntryUUID", [f"('{folder_uuid}')"])], assertion=me
        )
    )
    assert set(unique_ids(got)) == {folder_uid}
    contents = answered(zeep_client.stored_query(
        "GetFolderAndContents", [("$XDSFolderUniqueId", [f"'{folder_uid}'"])], assertion=me))  # fmt: skip
    assert set(unique_ids(contents)) == {folder_uid, *documents[:2]}
    for_document = answered(zeep_client.stored_query(
        "GetFoldersForDocument", [("$XDSDocumentEntryUniqueId", [f"'{documents[1]}'"])], assertion=me))  # fmt: skip
    assert set(unique_ids(for_document)) == {folder_uid}
    # And 21 documents as LeafClass are too many: a Failure with XDSTooManyResults, nothing listed
    find = [("$XDSDocumentEntryPatientId", [f"'{cx}'"]), ("$XDSDocumentEntryStatus", [APPROVED])]
    refused = answered(zeep_client.stored_query("FindDocuments", find, assertion=me), FAILURE)
    assert error_codes(refused) == ["XDSTooManyResults"]
    assert not list(refused.iter(f"{{{RIM}}}ExtrinsicObject"))
    # while ObjectRef lists them all
    refs = answered(zeep_client.stored_query("FindDocuments", find, assertion=me, return_type="ObjectRef"))
    assert len(object_refs(refs)) == 21


def test_unknown_patient_is_an_error_not_a_fault(zeep_client: ZeepXdsClient) -> None:
    unknown = f"{hetu()}^^^&{HETU_ISSUER}&ISO"
    body = answered(zeep_client.stored_query("FindDocuments", [
        ("$XDSDocumentEntryPatientId", [f"'{unknown}'"]), ("$XDSDocumentEntryStatus", [APPROVED])
    ], assertion=assertion(unknown)), FAILURE)  # fmt: skip
    assert error_codes(body) == ["XDSUnknownPatientId"]


# --- the ATNA audit messages of the XDS transactions ------------------------------------------------


def _participants(document: etree._Element) -> dict[str, etree._Element]:
    return {p.get("UserID"): p for p in document.iter("ActiveParticipant")}


def _purposes(document: etree._Element) -> list[str]:
    return [p.get("csd-code") for p in document.iter("PurposeOfUse")]


def _objects(document: etree._Element, id_type: str) -> list[etree._Element]:
    return [
        o
        for o in document.iter("ParticipantObjectIdentification")
        if o.find("ParticipantObjectIDTypeCode").get("csd-code") == id_type  # type: ignore[union-attr]
    ]


def test_every_xds_transaction_is_audited_with_who_and_why(
    cloud: LocalCloud, study: dict[str, object], report: dict[str, str]
) -> None:
    """ITI-18 (110112 Query), ITI-43 and RAD-69 (110106 Export) and ITI-42 (110107 Import), each
    with the XUA purpose of use, the requesting organisation and person; every message validates
    against the DICOM audit message schema (wait_for_record)."""
    cx, patient_id = str(study["cx"]), str(study["cx"]).split("^")[0]
    person = f"Dr Audit {new_uid()}"
    me = assertion(cx, subject=person, purpose="EMERGENCY")

    def by_me(event: str, event_type: str) -> tuple[dict[str, object], etree._Element]:
        return wait_for_record(
            cloud,
            lambda r, doc: r["event"] == event and event_type in r["event_types"] and person in r["xml"],
        )

    # When the demo organisation's user queries, fetches the manifest and the images
    query = soap_request(find_documents(cx), action="urn:ihe:iti:2007:RegistryStoredQuery", assertion=me)
    assert post(cloud, "/xds/registry", query).status_code == 200
    xdsb = "urn:ihe:iti:xds-b:2007"
    retrieve = etree.Element(f"{{{xdsb}}}RetrieveDocumentSetRequest", nsmap={"xdsb": xdsb})
    doc = etree.SubElement(retrieve, f"{{{xdsb}}}DocumentRequest")
    etree.SubElement(doc, f"{{{xdsb}}}RepositoryUniqueId").text = DEMO_ARCHIVE.repository_unique_id
    etree.SubElement(doc, f"{{{xdsb}}}DocumentUniqueId").text = str(study["manifest_uid"])
    iti43 = soap_request(retrieve, action="urn:ihe:iti:2007:RetrieveDocumentSet", assertion=me)
    assert post(cloud, "/xds/repository", iti43).status_code == 200
    rad69 = soap_request(
        rad69_request(study, ["1.2.840.10008.1.2.1"]),
        action="urn:ihe:rad:2009:RetrieveImagingDocumentSet",
        assertion=me,
    )
    assert post(cloud, "/xds/imaging", rad69).status_code == 200

    # Then ITI-18 is a Query with the request itself, the patient, the organisation and the person
    record, query_message = by_me("110112", "ITI-18")
    assert record["action"] == "E" and record["outcome"] == 0
    [asked] = _objects(query_message, "ITI-18")
    assert asked.get("ParticipantObjectID") == "urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d"
    sent = __import__("base64").b64decode(asked.findtext("ParticipantObjectQuery") or "")
    assert etree.fromstring(sent).tag == f"{{{QUERY_NS}}}AdhocQueryRequest" and patient_id.encode() in sent
    for message in (query_message,):
        assert _purposes(message) == ["EMERGENCY"]
        who = _participants(message)
        assert who[f"urn:oid:{DEMO_ORG.oid}"].get("UserIsRequestor") == "true"
        assert who[person].get("UserName", "").startswith(person)
        assert [o.get("ParticipantObjectID") for o in _objects(message, "2")] == [
            f"{patient_id}^^^&{HETU_ISSUER}&ISO"
        ]
    # And ITI-43 is an Export of the manifest, the archive the source and the organisation the destination
    record, export = by_me("110106", "ITI-43")
    assert (record["action"], record["outcome"], _purposes(export)) == ("R", 0, ["EMERGENCY"])
    assert [o.get("ParticipantObjectID") for o in _objects(export, "9")] == [study["manifest_uid"]]
    who = _participants(export)
    assert who[f"urn:oid:{DEMO_ORG.oid}"].find("RoleIDCode").get("csd-code") == "110152"  # type: ignore[union-attr]
    # And RAD-69 is an Export of the study with its three instances
    record, images = by_me("110106", "RAD-69")
    assert (record["action"], record["outcome"], _purposes(images)) == ("R", 0, ["EMERGENCY"])
    [exported] = _objects(images, "110180")
    assert exported.get("ParticipantObjectID") == study["study_uid"]
    assert [c.get("NumberOfInstances") for c in exported.iter("SOPClass")] == ["3"]
    assert person in etree.tostring(images, encoding="unicode")

    # And the repository's ITI-42 (the report fixture) is an Import of its submission set
    record, imported = wait_for_record(
        cloud, lambda r, doc: "ITI-42" in r["event_types"] and report["submission_set"] in r["xml"]
    )
    assert (record["event"], record["action"], record["outcome"]) == ("110107", "C", 0)
    assert f"urn:oid:{REPOSITORY_ORG}" in _participants(imported)
    assert [o.get("ParticipantObjectID") for o in _objects(imported, "2")] == [
        f"{patient_id}^^^&{HETU_ISSUER}&ISO"
    ]


def test_a_refused_assertion_is_an_authentication_failure_in_the_audit_trail(
    cloud: LocalCloud, study: dict[str, object]
) -> None:
    """An assertion refused before any transaction runs (here a tampered one) is a 110114 User
    Authentication failure, as a refused certificate is."""
    cx = str(study["cx"])

    def refusals() -> list[dict[str, Any]]:
        return [
            r for r in records(cloud) if r["event"] == "110114" and "AssertionSignatureInvalid" in r["xml"]
        ]

    before = len(refusals())
    signed = assertion(cx, subject=f"Dr Tamper {new_uid()}")
    for value in signed.iter("{urn:oasis:names:tc:SAML:2.0:assertion}AttributeValue"):
        if value.text == cx:
            value.text = "999999^^^&1.2.246.21&ISO"
    tampered = soap_request(
        find_documents(cx), action="urn:ihe:iti:2007:RegistryStoredQuery", assertion=signed
    )
    assert fault_subcode(post(cloud, "/xds/registry", tampered)) == "wsse:FailedCheck"
    # Then one more 110114 names the refusal, with a failure outcome, and validates
    wait_until(lambda: len(refusals()) > before, timeout=60, interval=0.3)
    record = refusals()[-1]
    assert record["outcome"] != 0
    document = assert_valid(record["xml"])
    assert document.find(".//EventID").get("csd-code") == "110114"  # type: ignore[union-attr]


# --- XDS over TLS with organisation certificates (the RAD-69 container's own TLS) --------------------


def test_rad69_over_tls_binds_the_certificate_to_the_xua_organisation(
    cloud: LocalCloud, study: dict[str, object], tmp_path: Path
) -> None:
    """A valid certificate of the XUA organisation gets the images over TLS; another
    organisation's certificate with the demo organisation's assertion gets wsse:FailedAuthentication
    (110114); a plain connection to the TLS port never gets an answer (110113)."""
    certs = customer_certificates(cloud, tmp_path, DEMO_ORG.oid, OTHER_ORG.removeprefix("urn:oid:"))
    cx = str(study["cx"])
    url = f"{cloud.xds_tls_url}/xds/imaging"
    person = f"Dr TLS {new_uid()}"

    def rad69() -> bytes:
        return soap_request(
            rad69_request(study, ["1.2.840.10008.1.2.1"]),
            action="urn:ihe:rad:2009:RetrieveImagingDocumentSet",
            assertion=assertion(cx, subject=person),
        )

    def over_tls(issued: Issued) -> requests.Response:
        return requests.post(
            url,
            data=rad69(),
            headers={"Content-Type": "application/soap+xml"},
            cert=(str(issued.cert_path), str(issued.key_path)),
            verify=str(certs.ca_path),
            timeout=120,
        )

    # When the demo organisation's system asks with its own certificate, it gets every instance
    response = over_tls(certs.valid)
    assert response.status_code == 200, response.text[:2000]
    assert [t for t, _ in mime_parts(response)[1:]] == ["application/dicom"] * 3
    # And the export's audit message names the connection's address
    _, export = wait_for_record(
        cloud, lambda r, doc: "RAD-69" in r["event_types"] and person in r["xml"] and r["outcome"] == 0
    )
    assert _participants(export)[f"urn:oid:{DEMO_ORG.oid}"].get("NetworkAccessPointID") == "127.0.0.1"

    # When another organisation's certificate comes with the demo organisation's assertion, it is refused
    refused = over_tls(certs.other_organisation)
    assert refused.status_code == 400 and fault_subcode(refused) == "wsse:FailedAuthentication"
    assert b"application/dicom" not in refused.content
    wait_for_record(
        cloud,
        lambda r, doc: r["event"] == "110114" and r["outcome"] == 4 and OTHER_ORG.split(":")[-1] in r["xml"],
    )

    # When a client speaks plain HTTP to the TLS port, or has no certificate, nothing is answered
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.post(url.replace("https://", "http://"), data=rad69(), timeout=30)
    with pytest.raises((requests.exceptions.SSLError, requests.exceptions.ConnectionError)):
        requests.post(url, data=rad69(), verify=str(certs.ca_path), timeout=30)
    wait_for_record(
        cloud,
        lambda r, doc: r["event"] == "110113" and f":{cloud.xds_tls_port}" in r["xml"],
    )
