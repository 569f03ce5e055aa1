"""Given the local cloud, when a modality sends a study with DCMTK storescu, then it is stored and indexed."""

from __future__ import annotations

from pathlib import Path

from archive.data.models import Instance, Study

from local.cloud import LocalCloud
from tests.support.cloud import storescu, wait_until
from tests.support.dicom import study


def test_study_sent_with_storescu_is_stored_and_indexed(cloud: LocalCloud, workdir: Path) -> None:
    # Given a three-instance CT study of a patient with a hetu
    files = study(workdir, 3)
    # When the modality sends it
    result = storescu(cloud, files)
    # Then every C-STORE succeeded
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("Received Store Response (Success)") == 3
    # And the index holds the study with its aggregates
    import pydicom

    study_uid = pydicom.dcmread(files[0]).StudyInstanceUID
    row = wait_until(lambda: (s := Study.get(study_uid)) and s.number_of_instances == 3 and s)
    assert row.patient_key == "020516C903K^^^1.2.246.21"
    assert row.modalities == {"CT"}
    assert row.accession_number == "ACC001"
    for path in files:
        sop = pydicom.dcmread(path).SOPInstanceUID
        assert Instance.get(sop).sha256
