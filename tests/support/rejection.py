"""Rejection notes made by an independent tool: highdicom's Key Object Selection document."""

from __future__ import annotations

from pathlib import Path

import highdicom
import pydicom
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from tests.support.dicom import new_uid

TITLES = {
    "113001": codes.DCM.RejectedForQualityReasons,
    "113037": codes.DCM.RejectedForPatientSafetyReasons,
    "113038": codes.DCM.IncorrectModalityWorklistEntry,
    "113039": codes.DCM.DataRetentionPolicyExpired,
}


def rejection_note(rejected: list[Path] | list[Dataset], code: str = "113001") -> Dataset:
    """A KOS rejecting ``rejected`` (files or datasets of one study) with title ``code``."""
    evidence = [
        item if isinstance(item, Dataset) else pydicom.dcmread(item, stop_before_pixels=True)
        for item in rejected
    ]
    title = TITLES.get(code) or highdicom.sr.CodedConcept(code, "DCM", "Key Object Selection")
    return highdicom.ko.KeyObjectSelectionDocument(
        evidence=evidence,
        content=highdicom.ko.KeyObjectSelection(document_title=title, referenced_objects=evidence),
        series_instance_uid=new_uid(),
        series_number=99,
        sop_instance_uid=new_uid(),
        instance_number=1,
        manufacturer="highdicom",
    )


def write_note(note: Dataset, directory: Path, name: str | None = None) -> Path:
    path = directory / (name or f"note-{note.SOPInstanceUID}.dcm")
    note.save_as(path, enforce_file_format=True)
    return path
