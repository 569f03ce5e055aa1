"""Given Orthanc registered as a customer's C-MOVE destination, when the customer moves a study to
it, then Orthanc holds the whole study with pixel data identical to what was sent."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
from archive.model.organisations import AEInfo

from local.cloud import LocalCloud
from tests.integration.test_query_retrieve import customer, hetu, store_study, sub
from tests.support.cloud import movescu
from tests.support.dicom import study
from tests.support.orthanc import DICOM_PORT, Orthanc


def test_move_whole_study_to_orthanc(cloud: LocalCloud, workdir: Path) -> None:
    # Given a stored study of 10 instances and Orthanc registered as the customer's move destination
    c = customer(cloud)
    files = study(sub(workdir, "study"), 10, patient_id=hetu())
    study_uid = store_study(cloud, c, files)
    sent = {str(ds.SOPInstanceUID): ds for ds in (pydicom.dcmread(f) for f in files)}
    with Orthanc(sub(workdir, "orthanc"), ae_title=f"ORTHANC{c.dest[-4:]}") as orthanc:
        cloud.register(
            c.org,
            AEInfo(orthanc.ae_title, c.org.oid, orthanc.address, DICOM_PORT, roles=("move-destination",)),
        )
        # When the customer's system asks the archive to move the study to Orthanc
        result = movescu(cloud, c.scu, orthanc.ae_title, study_uid)
        # Then the move succeeded and Orthanc has every instance, pixel data byte for byte
        assert result.returncode == 0, result.stderr
        assert "Received Final Move Response (Success)" in result.stderr, result.stderr
        studies = orthanc.get("/studies?expand")
        [ours] = [s for s in studies if s["MainDicomTags"]["StudyInstanceUID"] == study_uid]
        instance_ids = orthanc.get(f"/studies/{ours['ID']}/instances")
        assert len(instance_ids) == len(files)
        for entry in instance_ids:
            received = pydicom.dcmread(io.BytesIO(orthanc.get(f"/instances/{entry['ID']}/file")))
            original = sent[str(received.SOPInstanceUID)]
            assert received.PixelData == original.PixelData
            assert received.PatientID == original.PatientID
