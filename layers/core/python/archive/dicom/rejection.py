"""Decoding an IOCM rejection note (a Key Object Selection document with a rejection title)."""

from __future__ import annotations

import warnings
from typing import IO

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from archive.errors import DatasetDoesNotMatchSOPClass, InvalidDataset
from archive.model.rejection import (
    KEY_OBJECT_SELECTION_DOCUMENT,
    REJECTION_TITLES,
    InstanceReference,
    RejectionNote,
)


def may_be_rejection_note(sop_class_uid: str) -> bool:
    """Only KOS documents can be rejection notes; every other object skips the full parse."""
    return sop_class_uid == KEY_OBJECT_SELECTION_DOCUMENT


def read_rejection_note(fp: IO[bytes]) -> RejectionNote | None:
    """The rejection note in a Part-10 KOS file, or None when its title is not a rejection code."""
    fp.seek(0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(fp)
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        raise InvalidDataset(f"KOS cannot be parsed: {exc}") from exc
    finally:
        fp.seek(0)
    return rejection_note(ds)


def rejection_note(ds: Dataset) -> RejectionNote | None:
    """Decode a KOS dataset; None when it is an ordinary key object selection."""
    code = _rejection_code(ds)
    if code is None:
        return None
    references = []
    for study in ds.get("CurrentRequestedProcedureEvidenceSequence", []):
        study_uid = str(study.get("StudyInstanceUID", ""))
        for series in study.get("ReferencedSeriesSequence", []):
            series_uid = str(series.get("SeriesInstanceUID", ""))
            for sop in series.get("ReferencedSOPSequence", []):
                ref = InstanceReference(
                    study_uid,
                    series_uid,
                    str(sop.get("ReferencedSOPClassUID", "")),
                    str(sop.get("ReferencedSOPInstanceUID", "")),
                )
                if not all((ref.study_uid, ref.series_uid, ref.sop_class_uid, ref.sop_instance_uid)):
                    raise DatasetDoesNotMatchSOPClass("rejection note evidence item lacks a UID")
                references.append(ref)
    if not references:
        raise DatasetDoesNotMatchSOPClass("rejection note lists no instances in its evidence")
    return RejectionNote(
        sop_instance_uid=str(ds.SOPInstanceUID),
        study_uid=str(ds.StudyInstanceUID),
        code=code,
        references=tuple(dict.fromkeys(references)),
    )


def _rejection_code(ds: Dataset) -> str | None:
    titles = ds.get("ConceptNameCodeSequence", [])
    if len(titles) != 1:
        return None
    title = titles[0]
    value = str(title.get("CodeValue", ""))
    if str(title.get("CodingSchemeDesignator", "")) != "DCM" or value not in REJECTION_TITLES:
        return None
    return value
