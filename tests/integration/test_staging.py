"""The two tiers (docs/storage.md): C-STORE is acknowledged from the low-latency staging bucket, the
copy into the Object-Locked bucket follows asynchronously, and storage commitment confirms an
instance only once its locked copy is verified and indexed."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from archive.data.objects import instance_key
from archive.topology import LOCK_INSTANCE
from botocore.exceptions import ClientError
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from local.cloud import LocalCloud
from local.resources import BUCKET, STAGING_BUCKET
from tests.support.cloud import s3, wait_until
from tests.support.dicom import ct_dataset, new_uid
from tests.support.scu import Modality, action_information


def _head(cloud: LocalCloud, bucket: str, key: str) -> dict[str, Any] | None:
    try:
        return dict(s3(cloud).head_object(Bucket=bucket, Key=key))
    except ClientError:
        return None


def _commit(cloud: LocalCloud, sops: list[str]) -> tuple[int, set[str], dict[str, int]]:
    """One commitment request for ``sops``: (event type, committed, failed with reasons)."""
    modality = Modality(cloud.dicom_port)
    try:
        assert modality.request_commitment(action_information((CTImageStorage, s) for s in sops)) == 0x0000
        report = modality.wait_report(timeout=60)
    finally:
        modality.release()
    committed = {str(i.ReferencedSOPInstanceUID) for i in getattr(report.info, "ReferencedSOPSequence", [])}
    failed = {
        str(i.ReferencedSOPInstanceUID): int(i.FailureReason)
        for i in getattr(report.info, "FailedSOPSequence", [])
    }
    return report.event_type, committed, failed


@pytest.fixture
def copier_without_locked_bucket(cloud: LocalCloud) -> Iterator[None]:
    """The copier runs, but the Object-Locked bucket it writes to is out of its reach (every PUT
    fails with NoSuchBucket); the normal copier comes back afterwards, whatever the test did."""
    cloud.stop_function_process(LOCK_INSTANCE.function)
    cloud.start_function_process(LOCK_INSTANCE.function, ARCHIVE_BUCKET="archive-local-unreachable")
    try:
        yield
    finally:
        cloud.stop_function_process(LOCK_INSTANCE.function)
        cloud.start_function_process(LOCK_INSTANCE.function)


def test_store_is_acknowledged_from_staging_and_locked_with_its_retention(cloud: LocalCloud) -> None:
    # Given a modality storing two images
    study = new_uid()
    datasets = [ct_dataset(study_uid=study, instance_number=i + 1) for i in range(2)]
    modality = Modality(cloud.dicom_port)
    try:
        assert all(modality.store(ds) == 0x0000 for ds in datasets)
    finally:
        modality.release()
    keys = [instance_key(ds.SOPInstanceUID) for ds in datasets]
    # When the copies have run and the locked objects are indexed
    cloud.drain()
    # Then each is in the Object-Locked bucket under a retention, with the received digest
    for key in keys:
        locked = _head(cloud, BUCKET, key)
        assert locked is not None, key
        assert locked["ObjectLockMode"] == "GOVERNANCE"
        assert locked["ObjectLockRetainUntilDate"] > datetime.now(UTC)
        assert locked["Metadata"]["study-uid"] == study
        assert len(s3(cloud).list_object_versions(Bucket=BUCKET, Prefix=key)["Versions"]) == 1
    # And the staged copies are released once indexed
    wait_until(lambda: all(_head(cloud, STAGING_BUCKET, key) is None for key in keys))
    # And the same bytes again are an identical duplicate (success), different bytes are refused
    modality = Modality(cloud.dicom_port)
    try:
        assert modality.store(datasets[0]) == 0x0000
        changed = datasets[1].copy()
        changed.SeriesDescription = "changed"
        assert modality.store(changed) == 0x0124
    finally:
        modality.release()
    cloud.drain()
    assert all(len(s3(cloud).list_object_versions(Bucket=BUCKET, Prefix=k)["Versions"]) == 1 for k in keys)


def test_commitment_waits_for_the_locked_copy_and_confirms_once_the_copy_recovers(
    cloud: LocalCloud, copier_without_locked_bucket: None
) -> None:
    # Given three images acknowledged while the copier cannot reach the Object-Locked bucket
    study = new_uid()
    datasets = [ct_dataset(study_uid=study, instance_number=i + 1) for i in range(3)]
    sops = [ds.SOPInstanceUID for ds in datasets]
    modality = Modality(cloud.dicom_port)
    try:
        assert all(modality.store(ds) == 0x0000 for ds in datasets)
        # (a re-send of one of them is an identical duplicate; its copy is queued a second time)
        assert modality.store(datasets[0]) == 0x0000
        # staged (durable), not locked
        for sop in sops:
            assert _head(cloud, STAGING_BUCKET, instance_key(sop)) is not None
            assert _head(cloud, BUCKET, instance_key(sop)) is None
        # When storage commitment is requested while the copies keep failing
        info = action_information((CTImageStorage, sop) for sop in sops)
        assert modality.request_commitment(info) == 0x0000
        report = modality.wait_report(timeout=60)
    finally:
        modality.release()
    # Then none of them is confirmed: after the wait they fail as not (yet) the archive's
    failed = {str(i.ReferencedSOPInstanceUID): int(i.FailureReason) for i in report.info.FailedSOPSequence}
    assert report.event_type == 2
    assert "ReferencedSOPSequence" not in report.info or len(report.info.ReferencedSOPSequence) == 0
    assert failed == dict.fromkeys(sops, 0x0112)
    assert all(_head(cloud, BUCKET, instance_key(sop)) is None for sop in sops)
    assert all(_head(cloud, STAGING_BUCKET, instance_key(sop)) is not None for sop in sops)

    # When the copier reaches the locked bucket again (the failed copies come back after backoff)
    cloud.stop_function_process(LOCK_INSTANCE.function)
    cloud.start_function_process(LOCK_INSTANCE.function)
    wait_until(lambda: all(_head(cloud, BUCKET, instance_key(sop)) for sop in sops), timeout=90)
    cloud.drain(timeout=60)
    # Then a new commitment request confirms all of them
    event_type, committed, failed_now = _commit(cloud, sops)
    assert (event_type, committed, failed_now) == (1, set(sops), {})
    # And each locked copy is the received object, once (the second copy of the re-sent one changed
    # nothing), under retention, the study's as sent
    for sop in sops:
        locked = _head(cloud, BUCKET, instance_key(sop))
        assert locked is not None
        assert len(s3(cloud).list_object_versions(Bucket=BUCKET, Prefix=instance_key(sop))["Versions"]) == 1
        assert locked["ObjectLockMode"] == "GOVERNANCE"
        assert locked["Metadata"]["study-uid"] == study
