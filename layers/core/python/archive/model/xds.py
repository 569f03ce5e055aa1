"""XDS registry values: what the registry holds about a document, a submission set, a folder and
the associations between them, as the ITI-18 query, the ITI-42 registration and the XDS-I.b
registration of studies (manifests) all see them.

Codecs (``archive.xds``) turn these into ebRIM and back; ``archive.data`` keeps them in DynamoDB;
services decide. All times are timezone-aware UTC datetimes; the ebRIM DTM text form is the codec's
business.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class EntryStatus(StrEnum):
    """availabilityStatus of a registry object (ebRIM status type)."""

    SUBMITTED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Submitted"
    APPROVED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved"
    DEPRECATED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Deprecated"


class DocumentEntryType(StrEnum):
    """objectType of a DocumentEntry."""

    STABLE = "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1"
    ON_DEMAND = "urn:uuid:34268e47-fdf5-41a6-ba33-82133c465248"


class AssociationType(StrEnum):
    HAS_MEMBER = "urn:oasis:names:tc:ebxml-regrep:AssociationType:HasMember"
    REPLACE = "urn:ihe:iti:2007:AssociationType:RPLC"
    APPEND = "urn:ihe:iti:2007:AssociationType:APND"
    TRANSFORM = "urn:ihe:iti:2007:AssociationType:XFRM"
    TRANSFORM_REPLACE = "urn:ihe:iti:2007:AssociationType:XFRM_RPLC"
    SIGNS = "urn:ihe:iti:2007:AssociationType:signs"
    IS_SNAPSHOT_OF = "urn:ihe:iti:2010:AssociationType:IsSnapshotOf"


class Channel(StrEnum):
    """How a document came into the registry."""

    MANIFEST = "manifest"  # an XDS-I.b manifest this archive made for a committed study
    REPORT = "report"  # an imaging report registered by the patient data repository (ITI-42)


@dataclass(frozen=True)
class Code:
    """A coded value: code, coding scheme and display name (ebRIM Classification)."""

    code: str
    scheme: str
    display: str


@dataclass(frozen=True)
class Author:
    """An author: institutions as XON (``Name^^^^^^^^^OID``), person as XCN, roles and specialties."""

    institutions: tuple[str, ...] = ()
    person: str | None = None
    roles: tuple[str, ...] = ()
    specialties: tuple[str, ...] = ()
    telecommunications: tuple[str, ...] = ()  # XTN


@dataclass(frozen=True)
class DocumentEntry:
    """One registered document: a manifest of a study, or a report.

    ``patient_id`` is the affinity domain's CX (``020516C903K^^^&1.2.246.21&ISO``); ``hash`` is the
    SHA-1 (hex) of the document bytes as XDS wants it; ``controller`` is the OID of the organisation
    whose register the document belongs to (who may see it without a disclosure).
    """

    entry_uuid: str  # urn:uuid:...
    unique_id: str
    patient_id: str
    controller: str
    channel: Channel
    mime_type: str
    class_code: Code
    type_code: Code
    format_code: Code
    confidentiality_codes: tuple[Code, ...]
    healthcare_facility_type: Code
    practice_setting: Code
    creation_time: datetime
    hash: str
    size: int
    repository_unique_id: str
    language_code: str
    status: EntryStatus = EntryStatus.APPROVED
    object_type: DocumentEntryType = DocumentEntryType.STABLE
    title: str | None = None
    comments: str | None = None
    event_codes: tuple[Code, ...] = ()
    authors: tuple[Author, ...] = ()
    source_patient_id: str | None = None
    source_patient_info: tuple[str, ...] = ()  # PID-3/PID-5/PID-7/PID-8 lines
    service_start_time: datetime | None = None
    service_stop_time: datetime | None = None
    reference_ids: tuple[str, ...] = ()  # CXi: accession, Study Instance UID
    home_community_id: str | None = None
    logical_id: str | None = None  # the first version's entryUUID
    version: int = 1
    study_instance_uid: str | None = None  # manifests: the study they list
    legal_authenticator: str | None = None  # XCN


@dataclass(frozen=True)
class SubmissionSet:
    entry_uuid: str
    unique_id: str
    source_id: str
    patient_id: str
    submission_time: datetime
    content_type: Code
    controller: str
    status: EntryStatus = EntryStatus.APPROVED
    title: str | None = None
    comments: str | None = None
    authors: tuple[Author, ...] = ()
    intended_recipients: tuple[str, ...] = ()
    home_community_id: str | None = None


@dataclass(frozen=True)
class Folder:
    entry_uuid: str
    unique_id: str
    patient_id: str
    last_update_time: datetime
    controller: str
    codes: tuple[Code, ...] = ()
    status: EntryStatus = EntryStatus.APPROVED
    title: str | None = None
    comments: str | None = None
    home_community_id: str | None = None


@dataclass(frozen=True)
class Association:
    """``source`` -> ``target`` by entryUUID; HasMember from a submission set may carry the
    SubmissionSetStatus slot (Original or Reference)."""

    entry_uuid: str
    type: AssociationType
    source: str
    target: str
    patient_id: str
    status: EntryStatus = EntryStatus.APPROVED
    submission_set_status: str | None = None  # "Original" | "Reference" for HasMember
    slots: tuple[tuple[str, tuple[str, ...]], ...] = field(default_factory=tuple)
