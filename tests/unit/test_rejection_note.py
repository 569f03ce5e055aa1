"""Decoding IOCM rejection notes made by highdicom (an independent KOS writer)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from archive.dicom.rejection import may_be_rejection_note, read_rejection_note, rejection_note
from archive.errors import DatasetDoesNotMatchSOPClass
from archive.model.rejection import REJECTION_TITLES, InstanceReference

from tests.support.dicom import ct_dataset, new_uid
from tests.support.rejection import rejection_note as make_note


def _study(count: int) -> list:
    study_uid, series_uid = new_uid(), new_uid()
    return [
        ct_dataset(study_uid=study_uid, series_uid=series_uid, instance_number=i + 1) for i in range(count)
    ]


@pytest.mark.parametrize("code", sorted(REJECTION_TITLES))
def test_each_rejection_title_is_decoded_with_its_references(code: str) -> None:
    # Given a KOS with a rejection title naming two instances
    images = _study(2)
    note = make_note(images, code)
    # When it is decoded
    decoded = rejection_note(note)
    # Then it is a rejection with that code, referencing exactly those instances
    assert decoded is not None
    assert decoded.code == code
    assert decoded.sop_instance_uid == note.SOPInstanceUID
    assert set(decoded.references) == {
        InstanceReference(i.StudyInstanceUID, i.SeriesInstanceUID, i.SOPClassUID, i.SOPInstanceUID)
        for i in images
    }
    assert decoded.study_uids == (images[0].StudyInstanceUID,)


def test_ordinary_key_object_selection_is_not_a_rejection() -> None:
    # Given a KOS titled "Of Interest" (113000), not a rejection
    note = make_note(_study(1), "113000")
    # Then it is no rejection note
    assert rejection_note(note) is None


def test_rejection_note_without_evidence_is_refused() -> None:
    # Given a rejection note whose evidence sequence was emptied
    note = make_note(_study(1))
    note.CurrentRequestedProcedureEvidenceSequence = []
    # Then it does not match its SOP class (A900), rather than rejecting nothing
    with pytest.raises(DatasetDoesNotMatchSOPClass):
        rejection_note(note)


def test_read_from_part10_bytes_rewinds(tmp_path: Path) -> None:
    note = make_note(_study(1), "113037")
    buffer = io.BytesIO()
    note.save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    assert may_be_rejection_note(str(note.SOPClassUID))
    decoded = read_rejection_note(buffer)
    assert decoded is not None and decoded.code == "113037"
    assert buffer.tell() == 0
