"""Registration of committed studies (XDS-I.b manifests) and their confirmation (IAN), as values.

Configuration is held per affinity domain (the national code sets) and per organisation (its own
codes, time zone, stability time); the archive itself has one identity (OID, UID root,
repositoryUniqueId). ``RegistrationProfile`` is what one registration needs of all three, merged.
No I/O here: ``archive.data.registration`` stores these, the admin CLI edits them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from archive.model.xds import Code

DEFAULT_TIMEZONE = "Europe/Helsinki"
DEFAULT_STABILITY_SECONDS = 60.0
DEFAULT_LANGUAGE = "fi-FI"

# DICOM and XDS-I.b fixed values (not configuration: the standards fix them).
KOS_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.88.59"
FORMAT_CODE = Code(KOS_SOP_CLASS, "1.2.840.10008.2.6.1", "Key Object Selection Document")
MODALITY_SCHEME = "1.2.840.10008.2.16.4"
MIME_TYPE = "application/dicom"
STUDY_UID_REFERENCE = "urn:ihe:iti:xds:2016:studyInstanceUID"
ACCESSION_REFERENCE = "urn:ihe:iti:xds:2013:accession"


def code_json(code: Code) -> dict[str, str]:
    return {"code": code.code, "scheme": code.scheme, "display": code.display}


def code_from_json(value: Mapping[str, str]) -> Code:
    return Code(value["code"], value["scheme"], value.get("display", value["code"]))


def parse_code(text: str) -> Code:
    """``code^scheme^display`` (the admin CLI's form); display defaults to the code."""
    parts = text.split("^")
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise ValueError(f"a code is CODE^SCHEME[^DISPLAY], got {text!r}")
    return Code(parts[0], parts[1], parts[2] if len(parts) > 2 and parts[2] else parts[0])


@dataclass(frozen=True)
class CodeSet:
    """XDS codes of the manifests' entries. ``None`` = not set here (inherit from the domain)."""

    class_code: Code | None = None
    type_code: Code | None = None  # used when the study has no Procedure Code Sequence
    confidentiality_codes: tuple[Code, ...] | None = None
    healthcare_facility_type: Code | None = None
    practice_setting: Code | None = None
    content_type: Code | None = None  # the submission set's contentTypeCode
    language_code: str | None = None

    def over(self, base: CodeSet) -> CodeSet:
        """These codes, falling back to ``base`` where not set."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return replace(base, **{k: v for k, v in values.items() if v is not None})

    def missing(self) -> list[str]:
        return [f.name for f in fields(self) if getattr(self, f.name) is None]

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if isinstance(value, Code):
                out[f.name] = code_json(value)
            elif isinstance(value, tuple):
                out[f.name] = [code_json(c) for c in value]
            else:
                out[f.name] = value
        return out

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> CodeSet:
        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            raw = value.get(f.name)
            if raw is None:
                continue
            if f.name == "language_code":
                kwargs[f.name] = str(raw)
            elif f.name == "confidentiality_codes":
                kwargs[f.name] = tuple(code_from_json(c) for c in raw)
            else:
                kwargs[f.name] = code_from_json(raw)
        return cls(**kwargs)


@dataclass(frozen=True)
class ArchiveIdentity:
    """The archive as an XDS-I.b Imaging Document Source and RAD-69 repository."""

    oid: str  # the submission sets' sourceId
    uid_root: str  # root of the manifests' Series and SOP Instance UIDs
    repository_unique_id: str  # RAD-69 repositoryUniqueId = Retrieve Location UID in the manifests
    retrieve_ae_title: str = "ARCHIVE"
    home_community_id: str | None = None
    name: str = "National imaging archive"

    def as_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> ArchiveIdentity:
        return cls(**{f.name: value[f.name] for f in fields(cls) if f.name in value})


@dataclass(frozen=True)
class AffinityDomain:
    """A national affinity domain: whose identities are the registry's patient IDs, and its codes."""

    oid: str  # the assigning authority of the domain's patient IDs (1.2.246.21: Finnish hetu)
    codes: CodeSet = field(default_factory=CodeSet)
    name: str | None = None


@dataclass(frozen=True)
class OrganisationRegistration:
    """How one organisation's studies are registered (its own part of the configuration)."""

    org_oid: str
    affinity_domain: str
    codes: CodeSet = field(default_factory=CodeSet)  # overrides of the domain's codes
    timezone: str = DEFAULT_TIMEZONE
    stability_seconds: float = DEFAULT_STABILITY_SECONDS
    register_uncommitted: bool = False  # also register studies never committed (after stability)
    enabled: bool = True

    def __post_init__(self) -> None:
        ZoneInfo(self.timezone)  # raises ZoneInfoNotFoundError on a typo
        if self.stability_seconds < 0 or self.stability_seconds > 900:
            # SQS DelaySeconds is at most 900; longer quiet periods are re-queued in steps anyway.
            raise ValueError("stability time must be 0-900 seconds")


@dataclass(frozen=True)
class RegistrationProfile:
    """Everything one registration needs: the archive, the domain and the organisation, merged."""

    archive: ArchiveIdentity
    organisation: OrganisationRegistration
    org_name: str
    codes: CodeSet  # complete: domain codes with the organisation's overrides

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.organisation.timezone)

    @classmethod
    def merge(
        cls,
        archive: ArchiveIdentity,
        domain: AffinityDomain,
        organisation: OrganisationRegistration,
        org_name: str,
    ) -> RegistrationProfile:
        codes = organisation.codes.over(domain.codes)
        if codes.language_code is None:
            codes = replace(codes, language_code=DEFAULT_LANGUAGE)
        missing = codes.missing()
        if missing:
            raise ValueError(
                f"registration codes of {organisation.org_oid} incomplete: {', '.join(missing)} "
                f"(set them for domain {domain.oid} or the organisation)"
            )
        return cls(archive, organisation, org_name, codes)


# --- registration state -----------------------------------------------------------------------


class RegistrationState(StrEnum):
    WAITING = "WAITING"  # not committed (registered only if the organisation registers uncommitted studies)
    COMMITTED = "COMMITTED"  # committed, waiting for the stability time
    REGISTERED = "REGISTERED"
    # IOCM: every instance is rejected; the last version is Deprecated and nothing replaces it
    WITHDRAWN = "WITHDRAWN"
    DESTROYED = "DESTROYED"  # the study was destroyed; its entries are Deprecated, later removed


@dataclass(frozen=True)
class StudyRegistration:
    """Where a study stands: its current registered version and what that version listed."""

    study_uid: str
    org_oid: str
    state: RegistrationState
    version: int = 0
    entry_uuid: str | None = None  # the current (Approved) DocumentEntry
    manifest_uid: str | None = None
    fingerprint: str | None = None  # of the content the current version lists
    patient_id: str | None = None  # the registry patient ID of the current version
    committed_at: datetime | None = None
    registered_at: datetime | None = None


# --- IAN --------------------------------------------------------------------------------------


class InstanceAvailability(StrEnum):
    ONLINE = "ONLINE"
    NEARLINE = "NEARLINE"
    OFFLINE = "OFFLINE"
    UNAVAILABLE = "UNAVAILABLE"


@dataclass(frozen=True)
class AvailableInstance:
    sop_class_uid: str
    sop_instance_uid: str
    series_uid: str
    availability: InstanceAvailability = InstanceAvailability.ONLINE


@dataclass(frozen=True)
class AvailabilityNotice:
    """One IAN: a study's instances as available now, for one destination AE."""

    study_uid: str
    instances: tuple[AvailableInstance, ...]
    retrieve_ae_title: str
    performed_procedure_steps: tuple[tuple[str, str], ...] = ()  # (SOP Class UID, SOP Instance UID)


# IANs sent when a study's restore from a cold storage class completes carry versions from here on
# (base + the study's restore count), so they never collide with a registration version's IAN.
RESTORE_NOTIFICATION_VERSION_BASE = 900_000


class NotificationState(StrEnum):
    PENDING = "PENDING"
    DELIVERED = "DELIVERED"
    FAILED = "FAILED"  # gave up after the configured attempts (its message is in the DLQ)


@dataclass(frozen=True)
class Notification:
    """One IAN to deliver: study, registration version, destination AE."""

    study_uid: str
    version: int
    destination_ae: str
    org_oid: str
    state: NotificationState = NotificationState.PENDING
    attempts: int = 0
    last_error: str | None = None
    created_at: datetime | None = None
    delivered_at: datetime | None = None

    @property
    def key(self) -> str:
        return f"{self.version:06d}#{self.destination_ae}"

    def message(self) -> dict[str, Any]:
        return {
            "study_uid": self.study_uid,
            "version": self.version,
            "destination_ae": self.destination_ae,
            "org_oid": self.org_oid,
        }

    @classmethod
    def from_message(cls, body: Mapping[str, Any]) -> Notification:
        return cls(
            str(body["study_uid"]), int(body["version"]), str(body["destination_ae"]), str(body["org_oid"])
        )


# --- what a manifest lists ---------------------------------------------------------------------


@dataclass(frozen=True)
class StudyPatient:
    """The patient as the archive knows them now (after merges and name updates)."""

    patient_id: str
    issuer: str
    name: str | None = None
    name_charset: str | None = None  # DICOM Specific Character Set the name needs, if not ASCII
    birth_date: str | None = None
    sex: str | None = None

    @property
    def cx(self) -> str:
        """The identity as an XDS CX: ``020516C903K^^^&1.2.246.21&ISO``."""
        return f"{self.patient_id}^^^&{self.issuer}&ISO"


@dataclass(frozen=True)
class StudyInstance:
    sop_class_uid: str
    sop_instance_uid: str
    series_uid: str
    modality: str | None = None
    is_image: bool = True
    content_date: str | None = None
    content_time: str | None = None
    timezone_offset: str | None = None
    performed_procedure_step: tuple[str, str] | None = None  # (SOP Class UID, SOP Instance UID)
    procedure_code: Code | None = None
    anatomic_region: Code | None = None
    # Its object needs a restore before a read (storage tiers): NEARLINE in an IAN.
    nearline: bool = False


@dataclass(frozen=True)
class StudyContent:
    """A study with every instance the archive holds of it: what one manifest version lists.

    ``withdrawn``: the study's instances IOCM rejection notes hide now; no manifest lists them and
    an IAN says UNAVAILABLE for them."""

    study_uid: str
    org_oid: str
    patient: StudyPatient
    instances: tuple[StudyInstance, ...]
    study_date: str | None = None
    study_time: str | None = None
    accession_number: str | None = None
    accession_issuer: str | None = None
    study_id: str | None = None
    study_description: str | None = None
    referring_physician_name: str | None = None
    specific_character_set: str | None = None
    withdrawn: tuple[StudyInstance, ...] = ()

    @property
    def series_uids(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(i.series_uid for i in self.instances))

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(sorted({i.modality for i in self.instances if i.modality and i.modality != "KO"}))

    @property
    def timezone_offset(self) -> str | None:
        return next((i.timezone_offset for i in self.instances if i.timezone_offset), None)

    def fingerprint(self) -> str:
        """Changes exactly when a new registration version is due: the instances, the patient's
        identity and demographics, or the study attributes the entry shows."""
        parts = [
            self.patient.cx,
            self.patient.name or "",
            self.patient.birth_date or "",
            self.patient.sex or "",
            self.accession_number or "",
            self.study_description or "",
            *sorted(i.sop_instance_uid for i in self.instances),
        ]
        return hashlib.sha256("\x00".join(parts).encode()).hexdigest()
