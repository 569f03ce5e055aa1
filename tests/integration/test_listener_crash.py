"""SIGKILL of the listener in the middle of a study: nothing acknowledged is lost, and commitment
never confirms an instance that is not stored."""

from __future__ import annotations

import re
import signal
import subprocess
from pathlib import Path

import pydicom
from archive.data.models import Instance
from archive.data.objects import instance_key
from botocore.exceptions import ClientError
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from local.cloud import LocalCloud
from local.resources import BUCKET
from tests.support.cloud import DCMTK, s3
from tests.support.dicom import study
from tests.support.scu import Modality, action_information


def _in_s3(cloud: LocalCloud, sop: str) -> bool:
    try:
        s3(cloud).head_object(Bucket=BUCKET, Key=instance_key(sop))
        return True
    except ClientError:
        return False


def test_sigkill_mid_study_loses_nothing_acknowledged(cloud: LocalCloud, workdir: Path) -> None:
    # Given a 40-instance study being sent by storescu, one instance at a time
    files = study(workdir, 40, rows=256, columns=256)
    sops = {str(f): pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in files}
    sender = subprocess.Popen(
        [
            str(DCMTK / "storescu"),
            "-v",
            "-aet",
            "DEMO_MOD",
            "-aec",
            "ARCHIVE",
            "127.0.0.1",
            str(cloud.dicom_port),
            *map(str, files),
        ],
        stderr=subprocess.PIPE,
        text=True,
        env={"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"},
    )
    assert sender.stderr is not None
    acknowledged: list[str] = []
    current = None
    killed = False
    # When the listener process is killed after 10 instances were acknowledged
    for line in sender.stderr:
        if m := re.match(r"I: Sending file: (.*)$", line.strip()):
            current = m.group(1)
        elif "Received Store Response (Success)" in line and current:
            acknowledged.append(sops[current])
            if len(acknowledged) == 10 and not killed:
                assert cloud.dicom_process is not None
                cloud.dicom_process.send_signal(signal.SIGKILL)
                killed = True
    sender.wait(60)
    assert killed and sender.returncode != 0
    assert 10 <= len(acknowledged) < len(files)
    # And comes back (a new task on Fargate), once the killed one is gone: until it has exited its
    # listening socket still accepts, and the new one could not bind the port
    assert cloud.dicom_process is not None
    cloud.dicom_process.wait(10)
    cloud.dicom_process = None
    cloud.start_dicom_listener()
    cloud.drain()
    # Then every acknowledged instance is stored and indexed
    for sop in acknowledged:
        assert _in_s3(cloud, sop), sop
        assert Instance.get(sop).sha256
    # And commitment for the whole study confirms exactly what is stored, failing the rest (0x0112)
    modality = Modality(cloud.dicom_port)
    try:
        info = action_information((CTImageStorage, sop) for sop in sops.values())
        assert modality.request_commitment(info) == 0x0000
        report = modality.wait_report(timeout=90)
    finally:
        modality.release()
    committed = {str(i.ReferencedSOPInstanceUID) for i in getattr(report.info, "ReferencedSOPSequence", [])}
    failed = {str(i.ReferencedSOPInstanceUID): int(i.FailureReason) for i in report.info.FailedSOPSequence}
    stored = {sop for sop in sops.values() if _in_s3(cloud, sop)}
    assert set(acknowledged) <= committed
    assert committed == stored
    assert set(failed) == set(sops.values()) - stored
    assert set(failed.values()) == {0x0112}
    assert report.event_type == 2


def test_pending_commitment_survives_a_listener_restart(cloud: LocalCloud) -> None:
    # Given a requester with its own SCP, and a commitment request for an instance not yet sent
    from archive.model.organisations import AEInfo

    from local.cloud import DEMO_ORG, free_port
    from tests.support.dicom import ct_dataset
    from tests.support.scu import CommitmentReceiver

    receiver = CommitmentReceiver("RESTART_SCU", port=free_port())
    cloud.register(
        DEMO_ORG,
        AEInfo("RESTART_SCU", DEMO_ORG.oid, "127.0.0.1", receiver.port, roles=("store", "commitment")),
    )
    try:
        ds = ct_dataset()
        modality = Modality(cloud.dicom_port, ae_title="RESTART_SCU")
        info = action_information([(CTImageStorage, ds.SOPInstanceUID)])
        assert modality.request_commitment(info) == 0x0000
        modality.release()
        # When the listener is killed and replaced before the instance arrives
        assert cloud.dicom_process is not None
        cloud.dicom_process.send_signal(signal.SIGKILL)
        cloud.dicom_process.wait(10)
        cloud.dicom_process = None
        cloud.start_dicom_listener()
        modality = Modality(cloud.dicom_port, ae_title="RESTART_SCU")
        try:
            assert modality.store(ds) == 0x0000
        finally:
            modality.release()
        # Then the new listener finds the transaction in DynamoDB and reports it on a new association
        report = receiver.wait_report(timeout=60)
    finally:
        receiver.stop()
    assert report.event_type == 1
    assert {str(i.ReferencedSOPInstanceUID) for i in report.info.ReferencedSOPSequence} == {ds.SOPInstanceUID}
