"""ITI-18 Registry Stored Query latency beside C-FIND, on the same corpus (issue 14, section 5).

Seeding: each corpus study's XDS-I.b manifest submission (a DocumentEntry, its SubmissionSet and
the HasMember association) is built as model values and turned into items by the registry's own
``XdsRegistry.submission_items`` (what ``register`` writes); of those, the items the two stored
queries read, the DocumentEntry and SubmissionSet objects (the ``by_patient`` index), are
bulk-written (BatchWriteItem) like the C-FIND seeding. The uniqueId guards, reference and
association items (five more per study) are left out: no query measured here reads them, and at
100,000 studies they would add half a million writes to the stand-in. Registering through ITI-42 or
the registration Lambda would take far longer than the time budget on the local stand-in. The
Patient item the C-FIND seeding writes makes the patient known.

Then FindDocuments and FindSubmissionSets by a random patient (4 studies: 4 entries each) are
POSTed over HTTP to the local XDS endpoint with a signed XUA assertion of the demo identity
provider (minted before the clock starts), one request at a time; each latency from the request
to the whole response, and, through the proxy, the DynamoDB items every query examined vs returned.
"""

from __future__ import annotations

import http.client
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from archive.data.models import XdsRegistryItem
from archive.data.xds_registry import XdsRegistry
from archive.model.xds import (
    Association,
    AssociationType,
    Author,
    Channel,
    Code,
    DocumentEntry,
    SubmissionSet,
)
from lxml import etree

from local.cloud import DEMO_ARCHIVE
from local.demo_idp import DEMO_IDP_DIR, DEMO_ISSUER, ensure_demo_idp, mint_assertion, soap_request

from .data import ISSUER, StudyRecord
from .query import QueryLatency, QueryTally, SeedResult

LOG = logging.getLogger("bench.iti18")
QUERY_NS = "urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0"
RIM = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"
RS = "urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0"
APPROVED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved"
ACTION = "urn:ihe:iti:2007:RegistryStoredQuery"
# Stored query id, patient slot, status slot, the registry object each match is answered as.
QUERIES = {
    "ITI-18 FindDocuments": (
        "urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d",
        "$XDSDocumentEntryPatientId",
        "$XDSDocumentEntryStatus",
        "ExtrinsicObject",
    ),
    "ITI-18 FindSubmissionSets": (
        "urn:uuid:f26abbcb-ac74-4422-8a30-edb644bbc1a9",
        "$XDSSubmissionSetPatientId",
        "$XDSSubmissionSetStatus",
        "RegistryPackage",
    ),
}
LOINC = "2.16.840.1.113883.6.1"
KOS_FORMAT = Code("1.2.840.10008.5.1.4.1.1.88.59", "1.2.840.10008.2.6.1", "Key Object Selection")
STUDY_UID_REFERENCE = "urn:ihe:iti:xds:2016:studyInstanceUID"


def patient_cx(record: StudyRecord) -> str:
    return f"{record.patient_id}^^^&{ISSUER}&ISO"


def submission(record: StudyRecord, org_oid: str, at: datetime) -> list[XdsRegistryItem]:
    """The registry items of one study's manifest submission that FindDocuments and
    FindSubmissionSets read: its DocumentEntry and SubmissionSet objects, as registration writes them."""
    cx = patient_cx(record)
    manifest_uid = f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, record.study_uid).int}"
    document = DocumentEntry(
        entry_uuid=f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_OID, manifest_uid)}",
        unique_id=manifest_uid,
        patient_id=cx,
        controller=org_oid,
        channel=Channel.MANIFEST,
        mime_type="application/dicom",
        class_code=Code("18748-4", LOINC, "Diagnostic imaging study"),
        type_code=Code("18748-4", LOINC, "Diagnostic imaging study"),
        format_code=KOS_FORMAT,
        confidentiality_codes=(Code("N", "2.16.840.1.113883.5.25", "Normal"),),
        healthcare_facility_type=Code("22232009", "2.16.840.1.113883.6.96", "Hospital"),
        practice_setting=Code("394914008", "2.16.840.1.113883.6.96", "Radiology"),
        creation_time=at,
        hash="da39a3ee5e6b4b0d3255bfef95601890afd80709",
        size=2048,
        repository_unique_id=DEMO_ARCHIVE.repository_unique_id,
        language_code="fi-FI",
        title="Benchmark CT",
        event_codes=(Code("CT", "1.2.840.10008.2.16.4", "Computed Tomography"),),
        authors=(Author(institutions=(f"Benchmark Hospital^^^^^^^^^{org_oid}",)),),
        source_patient_id=cx,
        source_patient_info=(f"PID-3|{cx}", f"PID-5|{record.patient_name}"),
        reference_ids=(
            f"{record.accession}^^^^urn:ihe:iti:xds:2013:accession",
            f"{record.study_uid}^^^^{STUDY_UID_REFERENCE}",
        ),
        study_instance_uid=record.study_uid,
    )
    submission_set = SubmissionSet(
        entry_uuid=f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_OID, manifest_uid + '/submission-set')}",
        unique_id=f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, manifest_uid + '/ss').int}",
        source_id=DEMO_ARCHIVE.oid,
        patient_id=cx,
        submission_time=at,
        content_type=Code("18748-4", LOINC, "Diagnostic imaging study"),
        controller=org_oid,
        title=f"Imaging study {record.study_uid} version 1",
    )
    member = Association(
        entry_uuid=f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_OID, manifest_uid + '/has-member')}",
        type=AssociationType.HAS_MEMBER,
        source=submission_set.entry_uuid,
        target=document.entry_uuid,
        patient_id=cx,
        submission_set_status="Original",
    )
    items = XdsRegistry.submission_items([document], submission_set, associations=[member])
    return [item for item in items if item.patient_kind]


def seed_registry(records: Sequence[StudyRecord], org_oid: str, threads: int = 4) -> SeedResult:
    """Every study's manifest submission, BatchWriteItem from a few writers (see module doc)."""
    start = time.monotonic()
    at = datetime.now(UTC).replace(microsecond=0)

    def write(part: Sequence[StudyRecord]) -> None:
        with XdsRegistryItem.batch_write() as batch:
            for record in part:
                for item in submission(record, org_oid, at):
                    batch.save(item)

    slices = [records[i::threads] for i in range(threads)]
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(write, [p for p in slices if p]))
    return SeedResult(
        "ours (XDS registry)",
        len(records),
        time.monotonic() - start,
        "BatchWriteItem of each study's DocumentEntry and SubmissionSet (XdsRegistry.submission_items)",
    )


def stored_query(kind: str, patient: str) -> etree._Element:
    """The body of an ITI-18 request: Approved entries of one patient, LeafClass."""
    query_id, patient_slot, status_slot, _ = QUERIES[kind]
    request = etree.Element(f"{{{QUERY_NS}}}AdhocQueryRequest", nsmap={"query": QUERY_NS, "rim": RIM})
    etree.SubElement(
        request, f"{{{QUERY_NS}}}ResponseOption", returnType="LeafClass", returnComposedObjects="true"
    )
    query = etree.SubElement(request, f"{{{RIM}}}AdhocQuery", id=query_id)
    for name, value in ((patient_slot, f"'{patient}'"), (status_slot, f"('{APPROVED}')")):
        slot = etree.SubElement(query, f"{{{RIM}}}Slot", name=name)
        etree.SubElement(etree.SubElement(slot, f"{{{RIM}}}ValueList"), f"{{{RIM}}}Value").text = value
    return request


def requests_for(kind: str, patients: Sequence[str], org_oid: str) -> list[bytes]:
    """One signed request per patient (an assertion's resource-id is the patient it asks about)."""
    provider = ensure_demo_idp()
    key = (DEMO_IDP_DIR / "key.pem").read_bytes()
    out = []
    for patient in patients:
        assertion = mint_assertion(
            subject="Benchmark User",
            key_pem=key,
            cert_pem=provider.certificates[0],
            issuer=DEMO_ISSUER,
            audience=f"urn:oid:{DEMO_ARCHIVE.oid}",
            patient=patient,
            organization_id=f"urn:oid:{org_oid}",
            purpose="TREATMENT",
            # Minted before the run; the 100,000-study phase can take many minutes.
            lifetime=timedelta(hours=2),
        )
        out.append(soap_request(stored_query(kind, patient), action=ACTION, assertion=assertion))
    return out


def measure_iti18(
    system: str,
    url: str,
    kind: str,
    requests: Sequence[bytes],
    *,
    warmup: int = 5,
    reads: Callable[[], dict[str, Any]] | None = None,
    studies: int = 0,
    budget_seconds: float = 600.0,
    timeout: float = 300.0,
) -> QueryLatency:
    """POST each request on one keep-alive HTTP connection; latency from sending to the whole
    response. ``reads`` as in ``bench.query.measure_find``; no new query after ``budget_seconds``."""
    match_tag = f"{{{RIM}}}{QUERIES[kind][3]}"
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    tally = QueryTally(reads)
    began = time.monotonic()
    try:
        for i, body in enumerate([*requests[:warmup], *requests]):
            if time.monotonic() - began > budget_seconds:
                break
            if i >= warmup:
                tally.before()
            start = time.perf_counter()
            connection.request(
                "POST", parts.path or "/", body=body, headers={"Content-Type": "application/soap+xml"}
            )
            response = connection.getresponse()
            payload = response.read()
            elapsed = time.perf_counter() - start
            if i < warmup:
                continue
            found, ok = _answer(payload, response.status, match_tag)
            tally.add(elapsed, found, ok)
    finally:
        connection.close()
    return tally.result(system, kind, studies=studies, planned=len(requests))


def _answer(payload: bytes, status: int, match_tag: str) -> tuple[int, bool]:
    """(matches, success) of an ITI-18 response."""
    if status != 200:
        return 0, False
    try:
        root = etree.fromstring(payload)
    except etree.XMLSyntaxError:
        return 0, False
    response = next(root.iter(f"{{{QUERY_NS}}}AdhocQueryResponse"), None)
    if response is None:
        return 0, False
    ok = response.get("status", "").endswith(":Success")
    return sum(1 for _ in response.iter(match_tag)), ok
