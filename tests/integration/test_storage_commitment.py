"""Storage commitment (Push Model) through the real interface: a pynetdicom modality as SCU."""

from __future__ import annotations

from pathlib import Path

import pytest
from archive.data.models import StorageCommitment
from archive.model.organisations import AEInfo
from pynetdicom.sop_class import CTImageStorage, MRImageStorage  # type: ignore[attr-defined]

from local.cloud import DEMO_ORG, LocalCloud, free_port
from tests.support.cloud import wait_until
from tests.support.dicom import ct_dataset, new_uid
from tests.support.scu import CommitmentReceiver, Modality, action_information


def _refs(report_info: object, keyword: str) -> set[str]:
    return {str(item.ReferencedSOPInstanceUID) for item in getattr(report_info, keyword, [])}


def test_commitment_is_reported_on_the_same_association_once_all_instances_are_indexed(
    cloud: LocalCloud,
) -> None:
    # Given a modality that stored three images
    study_uid = new_uid()
    datasets = [ct_dataset(study_uid=study_uid, instance_number=i + 1) for i in range(3)]
    modality = Modality(cloud.dicom_port)
    try:
        assert all(modality.store(ds) == 0x0000 for ds in datasets)
        # When it asks for storage commitment and keeps the association open
        info = action_information((CTImageStorage, ds.SOPInstanceUID) for ds in datasets)
        assert modality.request_commitment(info) == 0x0000
        report = modality.wait_report(timeout=30)
    finally:
        modality.release()
    # Then the report comes back on that association, all committed
    assert report.same_association
    assert report.event_type == 1
    assert report.info.TransactionUID == info.TransactionUID
    assert _refs(report.info, "ReferencedSOPSequence") == {ds.SOPInstanceUID for ds in datasets}
    assert "FailedSOPSequence" not in report.info
    assert report.info.RetrieveAETitle == "ARCHIVE"
    # And the transaction is recorded as reported
    wait_until(lambda: StorageCommitment.get(info.TransactionUID).state == "REPORTED")


def test_missing_and_conflicting_instances_are_reported_as_failures_after_the_wait(cloud: LocalCloud) -> None:
    # Given one stored image, one never sent, and one referenced with the wrong SOP class
    stored = ct_dataset()
    other = ct_dataset()
    never_sent = new_uid()
    modality = Modality(cloud.dicom_port)
    try:
        assert modality.store(stored) == 0x0000
        assert modality.store(other) == 0x0000
        info = action_information(
            [
                (CTImageStorage, stored.SOPInstanceUID),
                (CTImageStorage, never_sent),
                (MRImageStorage, other.SOPInstanceUID),
            ]
        )
        # When commitment is requested
        assert modality.request_commitment(info) == 0x0000
        report = modality.wait_report(timeout=60)
    finally:
        modality.release()
    # Then the report says failures exist: 0x0112 for the missing one, 0x0119 for the conflict
    assert report.event_type == 2
    assert _refs(report.info, "ReferencedSOPSequence") == {stored.SOPInstanceUID}
    reasons = {str(i.ReferencedSOPInstanceUID): int(i.FailureReason) for i in report.info.FailedSOPSequence}
    assert reasons == {never_sent: 0x0112, other.SOPInstanceUID: 0x0119}


def test_report_goes_to_the_registered_ae_on_a_new_association_when_the_requester_has_left(
    cloud: LocalCloud,
) -> None:
    # Given a requester AE registered with its own SCP port, listening
    receiver = CommitmentReceiver("COMMIT_SCU", port=free_port())
    cloud.register(
        DEMO_ORG,
        AEInfo("COMMIT_SCU", DEMO_ORG.oid, "127.0.0.1", receiver.port, roles=("store", "commitment")),
    )
    try:
        datasets = [ct_dataset(instance_number=i + 1) for i in range(2)]
        modality = Modality(cloud.dicom_port, ae_title="COMMIT_SCU")
        assert all(modality.store(ds) == 0x0000 for ds in datasets)
        info = action_information((CTImageStorage, ds.SOPInstanceUID) for ds in datasets)
        # When it asks for commitment and releases the association at once
        assert modality.request_commitment(info) == 0x0000
        modality.release()
        report = receiver.wait_report(timeout=60)
    finally:
        receiver.stop()
    # Then the archive opened a new association to the registered AE and reported success there
    assert not report.same_association
    assert report.event_type == 1
    assert _refs(report.info, "ReferencedSOPSequence") == {ds.SOPInstanceUID for ds in datasets}
    wait_until(lambda: StorageCommitment.get(info.TransactionUID).reported_on == "NEW_ASSOCIATION")


def test_unreachable_requester_is_retried_with_backoff_and_then_served(cloud: LocalCloud) -> None:
    # Given a requester whose SCP is down when the report is first due
    port = free_port()
    cloud.register(
        DEMO_ORG, AEInfo("LATE_SCU", DEMO_ORG.oid, "127.0.0.1", port, roles=("store", "commitment"))
    )
    ds = ct_dataset()
    modality = Modality(cloud.dicom_port, ae_title="LATE_SCU")
    assert modality.store(ds) == 0x0000
    info = action_information([(CTImageStorage, ds.SOPInstanceUID)])
    assert modality.request_commitment(info) == 0x0000
    modality.release()
    # When delivery has failed at least once
    wait_until(lambda: (StorageCommitment.get(info.TransactionUID).attempts or 0) >= 1, timeout=60)
    assert StorageCommitment.get(info.TransactionUID).state == "PENDING"
    # Then once its SCP is up, the retry delivers the report
    receiver = CommitmentReceiver("LATE_SCU", port=port)
    try:
        report = receiver.wait_report(timeout=60)
    finally:
        receiver.stop()
    assert report.event_type == 1
    wait_until(lambda: StorageCommitment.get(info.TransactionUID).state == "REPORTED")


@pytest.mark.parametrize("drop", ["TransactionUID", "ReferencedSOPSequence"])
def test_malformed_commitment_request_is_refused(cloud: LocalCloud, drop: str) -> None:
    info = action_information([(CTImageStorage, new_uid())])
    delattr(info, drop)
    modality = Modality(cloud.dicom_port)
    try:
        assert modality.request_commitment(info) == 0x0115
    finally:
        modality.release()


def test_commitment_transactions_survive_in_dynamodb(cloud: LocalCloud, tmp_path: Path) -> None:
    # Given a commitment request for an instance that never arrives
    info = action_information([(CTImageStorage, new_uid())])
    modality = Modality(cloud.dicom_port)
    try:
        assert modality.request_commitment(info) == 0x0000
    finally:
        modality.release()
    # Then the transaction is in DynamoDB with its references, independent of the listener's memory
    item = StorageCommitment.get(info.TransactionUID)
    assert item.requester_ae == "DEMO_MOD"
    assert item.references[0]["sop_instance_uid"] == info.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
