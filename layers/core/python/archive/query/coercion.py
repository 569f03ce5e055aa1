"""The patient identity as the index holds it *now*, applied to what leaves the archive.

Stored objects never change (Object Lock). Merges (HL7 A40), identifier changes (A47) and name
updates (A08/A31) change Patient records in the index; every C-FIND response and every dataset sent
by C-MOVE/C-GET carries the current values, found by following ``merged_into`` to the survivor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pydicom.dataset import Dataset

from archive.data.models import Patient, Study
from archive.dicom.instance import ISSUER_TYPE_ISO, PatientIdentity

UTF8 = "ISO_IR 192"


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
    def of(cls, patient_key: str, patient: Patient | None, study: Study | None = None) -> PatientDemographics:
        """From the current Patient record; without one (not indexed yet), the study's values.

        A patient identity (a national one, above all) can be shared by organisations. The Patient
        record's demographics are those of the organisation that holds it; each other organisation's
        studies keep their own (as sent and as its own HL7 changed them), so no organisation's
        messages change what another one's register shows.
        """
        identity = PatientIdentity.from_key(patient_key)
        held_elsewhere = (
            patient is not None
            and study is not None
            and bool(patient.org_oid and study.org_oid)
            and patient.org_oid != study.org_oid
        )
        if patient is not None and held_elsewhere:
            assert study is not None
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


def issuer_qualifiers(issuer: str) -> Dataset:
    item = Dataset()
    item.UniversalEntityID = issuer
    item.UniversalEntityIDType = ISSUER_TYPE_ISO
    return item


def _encodable(ds: Dataset, values: list[str]) -> bool:
    charset = ds.get("SpecificCharacterSet")
    if charset and (UTF8 in (charset if isinstance(charset, list | tuple) else [charset])):
        return True
    return all(v.isascii() for v in values) or (charset == "ISO_IR 100" and _latin1(values))


def _latin1(values: list[str]) -> bool:
    try:
        for v in values:
            v.encode("latin-1")
        return True
    except UnicodeEncodeError:
        return False


def coerce(ds: Dataset, patient: PatientDemographics) -> Dataset:
    """Overwrite the patient module's identity attributes of ``ds`` (an in-memory copy) in place."""
    values = patient.attributes()
    if not _encodable(ds, list(values.values())):
        # Decode every text value with the old character set before switching to UTF-8.
        ds.decode()
        ds.SpecificCharacterSet = UTF8
    ds.PatientID = patient.patient_id
    ds.IssuerOfPatientID = patient.issuer
    ds.IssuerOfPatientIDQualifiersSequence = [issuer_qualifiers(patient.issuer)]
    for keyword in ("PatientName", "PatientBirthDate", "PatientSex"):
        if keyword in values:
            setattr(ds, keyword, values[keyword])
    return ds


class CurrentPatients:
    """Per-request cache of study patient -> current demographics (one resolve per patient)."""

    def __init__(self, resolve: Callable[[str], str], load: Callable[[str], Patient | None]) -> None:
        self._resolve = resolve
        self._load = load
        self._cache: dict[tuple[str, str | None], PatientDemographics] = {}

    def for_study(self, study: Study) -> PatientDemographics:
        key = study.patient_key or PatientIdentity(study.patient_id or "", study.issuer or "").key
        cache_key = (key, study.org_oid)
        if cache_key not in self._cache:
            current = self._resolve(key)
            self._cache[cache_key] = PatientDemographics.of(current, self._load(current), study)
        return self._cache[cache_key]
