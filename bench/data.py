"""Synthetic test data for the benchmarks: CT-like studies written as Part-10 files.

Every run gets fresh UIDs, so neither archive ever sees a duplicate (a duplicate takes a shorter
path in both). Pixel data is random, so nothing downstream can compress it away.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
UID_ROOT = "1.2.826.0.1.3680043.10.1394.9."  # test-only root; ".9." marks benchmark data
# The demo organisation's temporary-ID namespace: trusted by the local archive (local/cloud.py).
ISSUER = "1.2.246.10.12345678.22.2026"


@dataclass(frozen=True)
class StudyFiles:
    """One generated study on disk."""

    study_uid: str
    patient_id: str
    files: tuple[Path, ...]
    references: tuple[tuple[str, str], ...]  # (SOP Class UID, SOP Instance UID) per file

    @property
    def total_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.files)


def new_uid() -> str:
    return generate_uid(prefix=UID_ROOT)


def ct_header(
    *,
    patient_id: str,
    study_uid: str,
    series_uid: str,
    instance_number: int,
    accession: str,
    study_date: str = "20260115",
    patient_name: str = "Bench^Patient",
) -> Dataset:
    """The header of a CT image (no pixel data yet)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.SOPInstanceUID = new_uid()
    ds.file_meta.MediaStorageSOPClassUID = UID(CT_IMAGE_STORAGE)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.PatientID = patient_id
    ds.IssuerOfPatientID = ISSUER
    ds.PatientName = patient_name
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyDate = study_date
    ds.StudyTime = "101500"
    ds.AccessionNumber = accession
    ds.StudyID = "1"
    ds.StudyDescription = "Benchmark CT"
    ds.ReferringPhysicianName = "Bench^Referrer"
    ds.Modality = "CT"
    ds.SeriesNumber = 1
    ds.InstanceNumber = instance_number
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    return ds


def ct_study(
    directory: Path, count: int, *, rows: int, columns: int, patient_id: str, accession: str, seed: int = 0
) -> StudyFiles:
    """``count`` CT images of one new study and series, ``rows`` x ``columns`` 16-bit pixels each."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    study_uid, series_uid = new_uid(), new_uid()
    files: list[Path] = []
    refs: list[tuple[str, str]] = []
    for number in range(1, count + 1):
        ds = ct_header(
            patient_id=patient_id,
            study_uid=study_uid,
            series_uid=series_uid,
            instance_number=number,
            accession=accession,
        )
        ds.Rows = rows
        ds.Columns = columns
        ds.PixelData = rng.integers(0, 4096, size=rows * columns, dtype=np.uint16).tobytes()
        path = directory / f"{number:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
        refs.append((CT_IMAGE_STORAGE, str(ds.SOPInstanceUID)))
    return StudyFiles(study_uid, patient_id, tuple(files), tuple(refs))


@dataclass(frozen=True)
class StudyRecord:
    """Study-level facts of one study of the 10,000-study query corpus."""

    study_uid: str
    series_uid: str
    sop_instance_uid: str
    patient_id: str
    patient_name: str
    accession: str
    study_date: str


def query_corpus(studies: int, studies_per_patient: int = 4, *, start: int = 0) -> Iterator[StudyRecord]:
    """The query corpus: ``studies`` studies, ``studies_per_patient`` per patient, dates spread over
    a year; ``start`` continues a corpus (the numbering of patients and accessions goes on)."""
    for n in range(start, start + studies):
        patient = n // studies_per_patient
        month = 1 + n % 12
        day = 1 + n % 28
        yield StudyRecord(
            study_uid=new_uid(),
            series_uid=new_uid(),
            sop_instance_uid=new_uid(),
            patient_id=f"QPAT{patient:06d}",
            patient_name=f"Query^Patient{patient:06d}",
            accession=f"QACC{n:07d}",
            study_date=f"2025{month:02d}{day:02d}",
        )


def corpus_instance(record: StudyRecord) -> Dataset:
    """The one small image that represents a corpus study in Orthanc (and in our index)."""
    ds = ct_header(
        patient_id=record.patient_id,
        study_uid=record.study_uid,
        series_uid=record.series_uid,
        instance_number=1,
        accession=record.accession,
        study_date=record.study_date,
        patient_name=record.patient_name,
    )
    ds.SOPInstanceUID = record.sop_instance_uid
    ds.file_meta.MediaStorageSOPInstanceUID = UID(record.sop_instance_uid)
    ds.Rows = 16
    ds.Columns = 16
    ds.PixelData = bytes(16 * 16 * 2)
    return ds
