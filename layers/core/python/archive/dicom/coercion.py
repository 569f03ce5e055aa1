"""The patient identity as the index holds it *now*, applied to what leaves the archive.

Stored objects never change (Object Lock). Merges (HL7 A40), identifier changes (A47) and name
updates (A08/A31) change Patient records in the index; every C-FIND response and every dataset sent
by C-MOVE/C-GET carries the current values, found by following ``merged_into`` to the survivor.
"""

from __future__ import annotations

from pydicom.dataset import Dataset

from archive.dicom.instance import ISSUER_TYPE_ISO
from archive.model.records import PatientDemographics

UTF8 = "ISO_IR 192"


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
