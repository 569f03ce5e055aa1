"""What the archive needs to know about one SOP instance, read from its header.

``read_header`` parses up to (not including) the pixel data; ``InstanceHeader.from_dataset`` turns
the dataset into the typed facts that validation, the object metadata and the index use.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import IO, Any, BinaryIO

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from archive.errors import DatasetDoesNotMatchSOPClass, InvalidDataset

ISSUER_TYPE_ISO = "ISO"
MAX_LO = 64


def _text(ds: Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    return str(value).strip() or None


@dataclass(frozen=True)
class InstanceHeader:
    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str
    series_uid: str
    patient_id: str | None
    # Issuer as sent: Issuer of Patient ID, or the Universal Entity ID of its qualifiers (type ISO).
    issuer: str | None
    has_pixel_data: bool
    is_image: bool
    attributes: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dataset(cls, ds: Dataset, *, has_pixel_data: bool = False) -> InstanceHeader:
        uids = {}
        for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
            value = _text(ds, keyword)
            if not value:
                raise DatasetDoesNotMatchSOPClass(f"{keyword} missing")
            if not UID(value).is_valid:
                raise DatasetDoesNotMatchSOPClass(f"{keyword} {value!r} is not a valid UID")
            uids[keyword] = value
        patient_id = _text(ds, "PatientID")
        issuer = _text(ds, "IssuerOfPatientID")
        qualifiers = ds.get("IssuerOfPatientIDQualifiersSequence")
        if qualifiers:
            item = qualifiers[0]
            if _text(item, "UniversalEntityID") and _text(item, "UniversalEntityIDType") == ISSUER_TYPE_ISO:
                issuer = _text(item, "UniversalEntityID")
        for keyword in ("PatientID", "IssuerOfPatientID"):
            if isinstance(ds.get(keyword), pydicom.multival.MultiValue):
                raise DatasetDoesNotMatchSOPClass(f"{keyword} has more than one value")
        _check_identifier("PatientID", patient_id)
        _check_identifier("Issuer of Patient ID", issuer)
        return cls(
            sop_class_uid=uids["SOPClassUID"],
            sop_instance_uid=uids["SOPInstanceUID"],
            study_uid=uids["StudyInstanceUID"],
            series_uid=uids["SeriesInstanceUID"],
            patient_id=patient_id,
            issuer=issuer,
            has_pixel_data=has_pixel_data,
            is_image="Rows" in ds and "Columns" in ds,
            attributes=index_attributes(ds),
        )


def _check_identifier(name: str, value: str | None) -> None:
    """A Patient ID or issuer becomes part of a key: at most 64 characters (LO), no control
    characters, and no ``^^^`` (the separator of patient keys)."""
    if value is None:
        return
    if len(value) > MAX_LO:
        raise DatasetDoesNotMatchSOPClass(f"{name} longer than {MAX_LO} characters")
    if "^^^" in value or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise DatasetDoesNotMatchSOPClass(f"{name} has ^^^ or control characters")


def index_attributes(ds: Dataset) -> dict[str, Any]:
    """The attributes the index keeps (C-FIND return keys, XDS-I metadata), as plain strings."""
    keywords = (
        "SpecificCharacterSet",
        "PatientName",
        "PatientBirthDate",
        "PatientSex",
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "StudyID",
        "StudyDescription",
        "ReferringPhysicianName",
        "Modality",
        "SeriesNumber",
        "SeriesDescription",
        "SeriesDate",
        "BodyPartExamined",
        "InstanceNumber",
        "ContentDate",
        "ContentTime",
        "Rows",
        "Columns",
        "NumberOfFrames",
        "TimezoneOffsetFromUTC",
    )
    out: dict[str, Any] = {}
    for keyword in keywords:
        value = ds.get(keyword)
        if value is None or value == "":
            continue
        if isinstance(value, pydicom.multival.MultiValue):
            out[keyword] = "\\".join(str(v) for v in value)
        else:
            out[keyword] = str(value)
    accession_issuer = ds.get("IssuerOfAccessionNumberSequence")
    if accession_issuer and _text(accession_issuer[0], "UniversalEntityID"):
        out["AccessionIssuer"] = _text(accession_issuer[0], "UniversalEntityID")
    # For registration (XDS-I.b manifest metadata and IAN): the first item of each, kept small.
    pps = ds.get("ReferencedPerformedProcedureStepSequence")
    if pps and _text(pps[0], "ReferencedSOPInstanceUID"):
        out["PerformedProcedureStep"] = (
            f"{_text(pps[0], 'ReferencedSOPClassUID') or ''}|{_text(pps[0], 'ReferencedSOPInstanceUID')}"
        )
    for keyword, name in (
        ("ProcedureCodeSequence", "ProcedureCode"),
        ("AnatomicRegionSequence", "AnatomicRegion"),
    ):
        items = ds.get(keyword)
        if items and _text(items[0], "CodeValue") and _text(items[0], "CodingSchemeDesignator"):
            item = items[0]
            out[name] = (
                f"{_text(item, 'CodeValue')}^{_text(item, 'CodingSchemeDesignator')}^{_text(item, 'CodeMeaning') or ''}"
            )
    return out


def read_header(fp: IO[bytes] | BinaryIO, *, has_pixel_data: bool = False) -> InstanceHeader:
    """Parse a Part-10 file's header (stopping before pixel data) into an InstanceHeader.

    Large values are skipped by seeking (``defer_size``), so on a ranged S3 reader only the header
    bytes are fetched.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(fp, stop_before_pixels=True, defer_size="64 KB")
            return InstanceHeader.from_dataset(ds, has_pixel_data=has_pixel_data)
    except (DatasetDoesNotMatchSOPClass, InvalidDataset):
        raise
    except MemoryError:
        raise  # a resource problem, not a property of the data
    except InvalidDicomError as exc:
        raise InvalidDataset(f"cannot parse dataset: {exc}") from exc
    except Exception as exc:
        # Whatever pydicom raises while decoding bytes that passed the structural check (zlib
        # errors, BytesLengthException, NotImplementedError for a VR, ...) is a property of the
        # data: "cannot understand", never "out of resources", which makes senders retry forever.
        raise InvalidDataset(f"cannot parse dataset: {type(exc).__name__}: {exc}") from exc
