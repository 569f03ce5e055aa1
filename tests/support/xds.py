"""XDS test data: model values built field by field, the public vectors, and the official schema."""

from __future__ import annotations

import base64
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

from archive.model.xds import (
    Association,
    AssociationType,
    Author,
    Channel,
    Code,
    DocumentEntry,
    Folder,
    SubmissionSet,
)
from lxml import etree

# The public vectors live in shared/testdata beside the repository (or beside its worktrees).
TESTDATA = next(
    p / "shared" / "testdata"
    for p in Path(__file__).resolve().parents
    if (p / "shared" / "testdata").is_dir()
)
XDS = TESTDATA / "xds"
WSDL = XDS / "wsdl"
PATIENT = "020516C903K^^^&1.2.246.21&ISO"
OTHER_PATIENT = "010101A999X^^^&1.2.246.21&ISO"
HOSPITAL = "1.2.246.10.12345678.10"
REPOSITORY = "1.2.246.10.99999999.1.2"
MANIFEST_FORMAT = Code("1.2.840.10008.5.1.4.1.1.88.59", "1.2.840.10008.2.6.1", "Key Object Selection")


def new_uuid() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def new_oid() -> str:
    return f"2.25.{uuid.uuid4().int}"


def document(**changes: object) -> DocumentEntry:
    """A report DocumentEntry with every required attribute; ``changes`` replace fields."""
    entry = DocumentEntry(
        entry_uuid=new_uuid(),
        unique_id=new_oid(),
        patient_id=PATIENT,
        controller=HOSPITAL,
        channel=Channel.REPORT,
        mime_type="text/xml",
        class_code=Code("18748-4", "2.16.840.1.113883.6.1", "Diagnostic imaging study"),
        type_code=Code("18782-3", "2.16.840.1.113883.6.1", "Radiology Study observation"),
        format_code=Code(
            "urn:ihe:rad:CDA:ImagingReportStructuredHeadings:2013", "1.3.6.1.4.1.19376.1.2.3", "IRSH"
        ),
        confidentiality_codes=(Code("N", "2.16.840.1.113883.5.25", "Normal"),),
        healthcare_facility_type=Code("22232009", "2.16.840.1.113883.6.96", "Hospital"),
        practice_setting=Code("394914008", "2.16.840.1.113883.6.96", "Radiology"),
        creation_time=datetime(2024, 5, 2, 10, 30, 0, tzinfo=UTC),
        hash="da39a3ee5e6b4b0d3255bfef95601890afd80709",
        size=1234,
        repository_unique_id=REPOSITORY,
        language_code="fi-FI",
        title="CT head report",
        event_codes=(Code("CT", "1.2.840.10008.2.16.4", "Computed Tomography"),),
        authors=(
            Author(
                institutions=("Demo Hospital^^^^^^^^^1.2.246.10.12345678.10",),
                person="^Radiologist^Rita",
                roles=("Radiologist",),
            ),
        ),
        source_patient_id=PATIENT,
        source_patient_info=("PID-3|" + PATIENT, "PID-5|Testaaja^Taavi"),
        service_start_time=datetime(2024, 5, 2, 9, 0, tzinfo=UTC),
        service_stop_time=datetime(2024, 5, 2, 9, 20, tzinfo=UTC),
        reference_ids=("1.2.3.4.5^^^^urn:ihe:iti:xds:2016:studyInstanceUID",),
    )
    return replace(entry, **changes)  # type: ignore[arg-type]


def submission_set(**changes: object) -> SubmissionSet:
    ss = SubmissionSet(
        entry_uuid=new_uuid(),
        unique_id=new_oid(),
        source_id="1.2.246.10.12345678.10.1",
        patient_id=PATIENT,
        submission_time=datetime(2024, 5, 2, 11, 0, 0, tzinfo=UTC),
        content_type=Code("18748-4", "2.16.840.1.113883.6.1", "Diagnostic imaging study"),
        controller=HOSPITAL,
        title="Imaging report",
        authors=(
            Author(institutions=("Demo Hospital^^^^^^^^^1.2.246.10.12345678.10",), person="^Sender^Sam"),
        ),
    )
    return replace(ss, **changes)  # type: ignore[arg-type]


def folder(**changes: object) -> Folder:
    f = Folder(
        entry_uuid=new_uuid(),
        unique_id=new_oid(),
        patient_id=PATIENT,
        last_update_time=datetime(2024, 5, 2, 11, 0, 0, tzinfo=UTC),
        controller=HOSPITAL,
        codes=(Code("CT", "1.2.840.10008.2.16.4", "Computed Tomography"),),
        title="Episode",
    )
    return replace(f, **changes)  # type: ignore[arg-type]


def has_member(source: str, target: str, status: str | None = "Original", **changes: object) -> Association:
    a = Association(
        entry_uuid=new_uuid(),
        type=AssociationType.HAS_MEMBER,
        source=source,
        target=target,
        patient_id=PATIENT,
        submission_set_status=status,
    )
    return replace(a, **changes)  # type: ignore[arg-type]


def relation(kind: AssociationType, source: str, target: str) -> Association:
    return Association(entry_uuid=new_uuid(), type=kind, source=source, target=target, patient_id=PATIENT)


@cache
def _schema() -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(WSDL / "schema" / "IHE" / "XDSIB-all.xsd")))


def assert_valid(body: etree._Element) -> None:
    """The element validates against the official XDS.b / XDS-I.b / ebRS 3.0 schemas."""
    schema = _schema()
    document = etree.fromstring(etree.tostring(body))
    if not schema.validate(document):
        raise AssertionError("\n".join(str(e) for e in schema.error_log))


def inline_xop(body: etree._Element, parts: dict[str, bytes]) -> etree._Element:
    """A copy of an MTOM body with each xop:Include replaced by its part's base64 (for validation)."""
    copy = etree.fromstring(etree.tostring(body))
    for include in copy.iter("{http://www.w3.org/2004/08/xop/include}Include"):
        parent = include.getparent()
        assert parent is not None
        parent.remove(include)
        parent.text = base64.b64encode(parts[include.get("href", "")[4:]]).decode("ascii")
    return copy
