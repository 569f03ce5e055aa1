"""The index's records as the logic sees them: what indexing records about an instance, and the
patients, studies, series and instances that query and retrieval read back."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from archive.model.identity import PatientIdentity


@dataclass(frozen=True)
class IndexedInstance:
    """Everything the index records about one stored instance."""

    sop_instance_uid: str
    sop_class_uid: str
    study_uid: str
    series_uid: str
    transfer_syntax_uid: str
    s3_key: str
    s3_version_id: str | None
    sha256: str
    size: int
    sending_ae: str | None
    org_oid: str | None
    patient_key: str
    patient_id: str
    issuer: str
    received_at: datetime
    attributes: dict[str, Any]


@dataclass(frozen=True)
class PatientRecord:
    patient_key: str
    patient_id: str
    issuer: str
    patient_name: str | None = None
    birth_date: str | None = None
    sex: str | None = None
    org_oid: str | None = None
    merged_into: str | None = None


@dataclass(frozen=True)
class StudyRecord:
    study_uid: str
    patient_key: str | None = None
    org_oid: str | None = None
    patient_id: str | None = None
    issuer: str | None = None
    patient_name: str | None = None
    patient_birth_date: str | None = None
    patient_sex: str | None = None
    study_date: str = ""
    study_time: str | None = None
    accession_number: str | None = None
    study_id: str | None = None
    study_description: str | None = None
    referring_physician_name: str | None = None
    modalities: frozenset[str] = frozenset()
    sop_classes: frozenset[str] = frozenset()
    number_of_series: int = 0
    number_of_instances: int = 0
    # Instances in a storage class that needs a restore before a read (docs/storage.md, "Tiers").
    nearline_instances: int = 0


@dataclass(frozen=True)
class SeriesRecord:
    study_uid: str
    series_uid: str
    modality: str | None = None
    series_number: str | None = None
    series_description: str | None = None
    series_date: str | None = None
    body_part_examined: str | None = None
    number_of_instances: int = 0
    nearline_instances: int = 0


@dataclass(frozen=True)
class InstanceRecord:
    sop_instance_uid: str
    sop_class_uid: str
    study_uid: str
    series_uid: str
    transfer_syntax_uid: str
    s3_key: str
    s3_version_id: str | None
    sha256: str
    size: int
    instance_number: str | None = None
    rows: int | None = None
    columns: int | None = None
    number_of_frames: int | None = None
    attributes: dict[str, Any] | None = None
    # The organisation that stored it (storage commitment confirms only to that organisation).
    org_oid: str | None = None
    # IOCM rejection code while a rejection note hides the instance.
    rejected: str | None = None
    # Its object is in an archive storage class and not restored: a read needs a restore first.
    nearline: bool = False


def _held_elsewhere(patient: PatientRecord, study: StudyRecord) -> bool:
    """Whether the study's controller is not the organisation that holds the Patient record."""
    return bool(patient.org_oid and study.org_oid) and patient.org_oid != study.org_oid


@dataclass(frozen=True)
class PatientDemographics:
    """Identity and demographics of one (surviving) patient."""

    patient_key: str
    patient_id: str
    issuer: str
    patient_name: str | None = None
    birth_date: str | None = None
    sex: str | None = None

    @classmethod
    def of(
        cls, patient_key: str, patient: PatientRecord | None, study: StudyRecord | None = None
    ) -> PatientDemographics:
        """From the current Patient record; without one (not indexed yet), the study's values.

        A patient identity (a national one, above all) can be shared by organisations. The Patient
        record's demographics are those of the organisation that holds it; each other organisation's
        studies keep their own (as sent and as its own HL7 changed them), so no organisation's
        messages change what another one's register shows.
        """
        identity = PatientIdentity.from_key(patient_key)
        if patient is not None and study is not None and _held_elsewhere(patient, study):
            return cls(
                patient_key,
                patient.patient_id or identity.patient_id,
                patient.issuer or identity.issuer,
                study.patient_name,
                study.patient_birth_date,
                study.patient_sex,
            )
        if patient is not None:
            return cls(
                patient_key,
                patient.patient_id or identity.patient_id,
                patient.issuer or identity.issuer,
                patient.patient_name,
                patient.birth_date,
                patient.sex,
            )
        return cls(
            patient_key,
            identity.patient_id,
            identity.issuer,
            study.patient_name if study else None,
            study.patient_birth_date if study else None,
            study.patient_sex if study else None,
        )

    def attributes(self) -> dict[str, str]:
        """C-FIND return values / coercion values by keyword (absent values left out)."""
        out = {"PatientID": self.patient_id, "IssuerOfPatientID": self.issuer}
        if self.patient_name:
            out["PatientName"] = self.patient_name
        if self.birth_date:
            out["PatientBirthDate"] = self.birth_date
        if self.sex:
            out["PatientSex"] = self.sex
        return out
