"""DICOM test data: pydicom's bundled storage objects and small synthetic studies."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pydicom
import pydicom.data
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

UID_ROOT = "1.2.826.0.1.3680043.10.1394."  # test-only UID root for generated UIDs
HETU_ISSUER = "1.2.246.21"
# The files bundled inside the pydicom wheel (no download, unlike get_testdata_files).
BUNDLED = Path(pydicom.data.__file__).parent / "test_files"


@dataclass(frozen=True)
class StorageFile:
    path: Path
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    modality: str | None


@cache
def bundled_storage_files() -> tuple[StorageFile, ...]:
    """Every file pydicom ships that is a whole, valid storage object (SOP class, UIDs, syntax).

    Files pydicom ships *as broken examples* (truncated, no file meta, a dataset encoded differently
    from its declared syntax) are left out by the checks below, not by name.
    """
    from archive.dicom.structure import check_structure

    out = []
    for path in sorted(BUNDLED.iterdir()):
        if path.suffix.lower() not in (".dcm", "") or not path.is_file():
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(path, stop_before_pixels=True)
            ts = str(ds.file_meta.TransferSyntaxUID)
            sop_class = str(ds.SOPClassUID)
            sop_instance = str(ds.SOPInstanceUID)
            raw = path.read_bytes()
            if raw[128:132] != b"DICM" or not sop_class.startswith("1.2.840.10008.5.1.4.1.1"):
                continue
            check_structure(open(path, "rb"), len(raw), ts)  # noqa: SIM115
        except Exception:
            continue
        out.append(StorageFile(path, sop_class, sop_instance, ts, ds.get("Modality")))
    return tuple(out)


# DCMTK storescu proposes one compressed syntax per run; the option that proposes each one.
STORESCU_PROPOSAL = {
    "1.2.840.10008.1.2": "-xi",
    "1.2.840.10008.1.2.1": "-xe",
    "1.2.840.10008.1.2.2": "-xb",
    "1.2.840.10008.1.2.1.99": "-xd",
    "1.2.840.10008.1.2.4.50": "-xy",
    "1.2.840.10008.1.2.4.51": "-xx",
    "1.2.840.10008.1.2.4.70": "-xs",
    "1.2.840.10008.1.2.4.80": "-xt",
    "1.2.840.10008.1.2.4.81": "-xu",
    "1.2.840.10008.1.2.4.90": "-xv",
    "1.2.840.10008.1.2.4.91": "-xw",
    "1.2.840.10008.1.2.5": "-xr",
}


def new_uid() -> str:
    return generate_uid(prefix=UID_ROOT)


def ct_dataset(
    *,
    patient_id: str = "020516C903K",
    issuer: str | None = HETU_ISSUER,
    patient_name: str = "Testinen^Matti",
    study_uid: str | None = None,
    series_uid: str | None = None,
    sop_instance_uid: str | None = None,
    accession: str = "ACC001",
    instance_number: int = 1,
    rows: int = 16,
    columns: int = 16,
    modality: str = "CT",
    study_date: str = "20260115",
) -> Dataset:
    """A small but complete CT image (Explicit VR Little Endian) with the given identity."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_instance_uid or new_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = CTImageStorage
    ds.StudyInstanceUID = study_uid or new_uid()
    ds.SeriesInstanceUID = series_uid or new_uid()
    ds.PatientID = patient_id
    if issuer:
        ds.IssuerOfPatientID = issuer
        q = Dataset()
        q.UniversalEntityID = issuer
        q.UniversalEntityIDType = "ISO"
        ds.IssuerOfPatientIDQualifiersSequence = [q]
    ds.PatientName = patient_name
    ds.PatientBirthDate = "19160502"
    ds.PatientSex = "M"
    ds.StudyDate = study_date
    ds.StudyTime = "101500"
    ds.AccessionNumber = accession
    ds.StudyID = "1"
    ds.StudyDescription = "CT test study"
    ds.ReferringPhysicianName = "Lääkäri^Liisa"
    ds.Modality = modality
    ds.SeriesNumber = 1
    ds.InstanceNumber = instance_number
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.Rows = rows
    ds.Columns = columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelData = bytes((instance_number + i) % 256 for i in range(rows * columns * 2))
    return ds


def write(ds: Dataset, directory: Path, name: str | None = None) -> Path:
    path = directory / (name or f"{ds.SOPInstanceUID}.dcm")
    ds.save_as(path, enforce_file_format=True)
    return path


def study(directory: Path, count: int, **kwargs: object) -> list[Path]:
    """``count`` instances of one new study (one series), written to ``directory``."""
    study_uid = str(kwargs.pop("study_uid", None) or new_uid())
    series_uid = str(kwargs.pop("series_uid", None) or new_uid())
    return [
        write(
            ct_dataset(study_uid=study_uid, series_uid=series_uid, instance_number=i + 1, **kwargs), directory
        )  # type: ignore[arg-type]
        for i in range(count)
    ]
