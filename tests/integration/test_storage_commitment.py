"""Storage commitment (Push Model) through the real interface: a pynetdicom modality as SCU."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from archive.data.commitments import CommitmentRepository
from archive.data.index import IndexRepository
from archive.data.models import Instance, StorageCommitment, StorageCommitmentPart
from archive.data.objects import ObjectStore
from archive.data.registry import Registry
from archive.model.commitment import CommitmentRequest, Reference
from archive.model.organisations import AEInfo, OrganisationInfo
from archive.services.directory import CachedRegistry
from archive.topology import COMMITMENT_UNDELIVERABLE_METRIC
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    MRImageStorage,
    StorageCommitmentPushModel,
)

from listeners.dicom.commitment_worker import CommitmentWorker
from listeners.dicom.server import LiveAssociations
from local.cloud import DEMO_ORG, LocalCloud, free_port
from local.resources import client
from tests.support.cloud import admin_cli, json_lines, wait_until
from tests.support.dicom import HETU_ISSUER, ct_dataset, new_uid
from tests.support.scu import COMMITMENT_INSTANCE, CommitmentReceiver, Modality, action_information

_admin = admin_cli


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
    assert cloud.settings is not None
    repository = CommitmentRepository(cloud.settings)
    transaction = repository.get(info.TransactionUID)
    assert transaction is not None and transaction.requester_ae == "DEMO_MOD"
    assert repository.references(info.TransactionUID) == [
        Reference(CTImageStorage, info.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
    ]


# --- two organisations, roles, large transactions, failures ------------------------------------

_orgs = iter(range(1, 10_000))


def organisation(
    cloud: LocalCloud, roles: tuple[str, ...] = ("store", "commitment"), port: int | None = None
) -> str:
    """Register a new organisation (the registry code the admin CLI uses) with one modality AE."""
    n = next(_orgs)
    org = OrganisationInfo(
        oid=f"1.2.246.10.77777777.{n}", name=f"Commitment test clinic {n}", trusted_issuers=(HETU_ISSUER,)
    )
    ae_title = f"SC_MOD_{n}"
    cloud.register(org, AEInfo(ae_title, org.oid, "127.0.0.1", port or free_port(), roles=roles))
    return ae_title


def store_all(cloud: LocalCloud, ae_title: str, datasets: list[Any]) -> None:
    modality = Modality(cloud.dicom_port, ae_title=ae_title)
    try:
        statuses = [modality.store(ds) for ds in datasets]
    finally:
        modality.release()
    assert statuses == [0x0000] * len(datasets)


def _indexed(sop_uids: list[str]) -> bool:
    found = {i.sop_instance_uid for i in Instance.batch_get(sop_uids)}
    return found == set(sop_uids)


def test_ten_thousand_references_are_recorded_and_reported_in_full(cloud: LocalCloud) -> None:
    # Given organisation A's modality that stored 200 images, and organisation B's that stored 10
    a, b = organisation(cloud), organisation(cloud)
    study_uid, series_uid = new_uid(), new_uid()
    ours = [ct_dataset(study_uid=study_uid, series_uid=series_uid, instance_number=i + 1) for i in range(200)]
    theirs = [ct_dataset(instance_number=i + 1) for i in range(10)]
    t0 = time.monotonic()
    store_all(cloud, b, theirs)
    store_all(cloud, a, ours)
    t1 = time.monotonic()
    wait_until(lambda: _indexed([str(ds.SOPInstanceUID) for ds in ours + theirs]), timeout=180, interval=0.5)
    print(f"stored 210 instances in {t1 - t0:.1f} s, indexed after {time.monotonic() - t1:.1f} s more")
    # When A asks for commitment of 10,000 instances: its 200, B's 10 and 9,790 never stored
    never = [new_uid() for _ in range(10_000 - len(ours) - len(theirs))]
    uids = [str(ds.SOPInstanceUID) for ds in ours + theirs] + never
    info = action_information((CTImageStorage, uid) for uid in uids)
    modality = Modality(cloud.dicom_port, ae_title=a)
    try:
        started = time.monotonic()
        assert modality.request_commitment(info) == 0x0000
        accepted = time.monotonic() - started
        report = modality.wait_report(timeout=120)
        reported = time.monotonic() - started
    finally:
        modality.release()
    print(f"10,000-reference N-ACTION answered in {accepted:.1f} s, reported after {reported:.1f} s")
    # Then one N-EVENT-REPORT lists every reference once: A's 200 committed, everything else 0x0112
    assert report.same_association and report.event_type == 2
    committed = [str(i.ReferencedSOPInstanceUID) for i in report.info.ReferencedSOPSequence]
    failed = [(str(i.ReferencedSOPInstanceUID), int(i.FailureReason)) for i in report.info.FailedSOPSequence]
    assert sorted(committed) == sorted(str(ds.SOPInstanceUID) for ds in ours)
    assert sorted(uid for uid, _ in failed) == sorted([str(ds.SOPInstanceUID) for ds in theirs] + never)
    assert {reason for _, reason in failed} == {0x0112}
    assert len(committed) + len(failed) == 10_000
    # And the transaction is recorded whole and reported once
    assert cloud.settings is not None
    transaction = CommitmentRepository(cloud.settings).get(info.TransactionUID)
    assert transaction is not None
    assert (transaction.reference_count, transaction.committed_count, transaction.failed_count) == (
        10_000,
        200,
        9_800,
    )
    wait_until(lambda: StorageCommitment.get(info.TransactionUID).state == "REPORTED")


def test_requester_without_the_commitment_role_is_refused(cloud: LocalCloud) -> None:
    # Given an AE that may store but not request commitment
    store_only = organisation(cloud, roles=("store",))
    ds = ct_dataset()
    modality = Modality(cloud.dicom_port, ae_title=store_only)
    try:
        assert modality.store(ds) == 0x0000
        # When it sends an N-ACTION
        status, _ = modality.assoc.send_n_action(
            action_information([(CTImageStorage, ds.SOPInstanceUID)]),
            1,
            StorageCommitmentPushModel,
            COMMITMENT_INSTANCE,
        )
    finally:
        modality.release()
    # Then it is refused as not authorised, with a reason, and nothing is recorded
    assert status.Status == 0x0124
    assert "commitment" in status.ErrorComment


def test_instances_of_another_organisation_are_not_confirmed(cloud: LocalCloud) -> None:
    # Given an image organisation B stored and one organisation A stored
    a, b = organisation(cloud), organisation(cloud)
    ours, theirs = ct_dataset(), ct_dataset()
    store_all(cloud, b, [theirs])
    store_all(cloud, a, [ours])
    wait_until(lambda: _indexed([ours.SOPInstanceUID, theirs.SOPInstanceUID]))
    # When A asks for commitment of both (B's with the wrong SOP class, which would be 0x0119 for A's own)
    info = action_information(
        [(CTImageStorage, ours.SOPInstanceUID), (MRImageStorage, theirs.SOPInstanceUID)]
    )
    modality = Modality(cloud.dicom_port, ae_title=a)
    try:
        assert modality.request_commitment(info) == 0x0000
        report = modality.wait_report(timeout=60)
    finally:
        modality.release()
    # Then B's instance is reported exactly like one that does not exist: 0x0112
    assert report.event_type == 2
    assert _refs(report.info, "ReferencedSOPSequence") == {ours.SOPInstanceUID}
    assert [
        (str(i.ReferencedSOPInstanceUID), int(i.FailureReason)) for i in report.info.FailedSOPSequence
    ] == [(theirs.SOPInstanceUID, 0x0112)]
    # And B cannot reuse A's Transaction UID to get A's answer
    modality = Modality(cloud.dicom_port, ae_title=b)
    try:
        status, _ = modality.assoc.send_n_action(info, 1, StorageCommitmentPushModel, COMMITMENT_INSTANCE)
    finally:
        modality.release()
    assert status.Status == 0x0115


def test_a_request_that_cannot_be_recorded_is_answered_with_processing_failure(cloud: LocalCloud) -> None:
    # Given the table of transaction slices unavailable (a storage failure other than "exists")
    dynamodb = client("dynamodb", cloud.endpoint)
    table = StorageCommitmentPart.Meta.table_name
    dynamodb.delete_table(TableName=table)
    try:
        info = action_information([(CTImageStorage, new_uid())])
        modality = Modality(cloud.dicom_port)
        try:
            # When a commitment is requested
            status, _ = modality.assoc.send_n_action(info, 1, StorageCommitmentPushModel, COMMITMENT_INSTANCE)
        finally:
            modality.release()
    finally:
        StorageCommitmentPart.create_table(billing_mode="PAY_PER_REQUEST", wait=True)
    # Then the N-ACTION fails 0x0110 (the requester retries), and no transaction was half-recorded
    assert status.Status == 0x0110
    assert StorageCommitment.count(info.TransactionUID) == 0
    # And the same request, sent again, is taken
    modality = Modality(cloud.dicom_port)
    try:
        assert modality.request_commitment(info) == 0x0000
    finally:
        modality.release()


def test_a_report_that_cannot_be_delivered_ends_undeliverable_alarmed_and_listed(cloud: LocalCloud) -> None:
    # Given a requester whose registered SCP is not listening, and that left after its N-ACTION
    port = free_port()
    requester = organisation(cloud, port=port)
    ds = ct_dataset()
    assert cloud.log_dir is not None
    log = cloud.log_dir / "dicom.log"
    modality = Modality(cloud.dicom_port, ae_title=requester)
    try:
        assert modality.store(ds) == 0x0000
        info = action_information([(CTImageStorage, ds.SOPInstanceUID)])
        assert modality.request_commitment(info) == 0x0000
    finally:
        modality.release()
    # When every retry has failed
    wait_until(lambda: StorageCommitment.get(info.TransactionUID).state == "UNDELIVERABLE", timeout=90)

    # Then the listener emitted the metric CDK alarms on (CloudWatch embedded metric format), once
    def emitted_lines() -> list[dict[str, Any]]:
        text = log.read_text()
        complete = text[: text.rfind("\n") + 1]  # not a line the listener is still writing
        return [
            json.loads(line[line.index("{") :])
            for line in complete.splitlines()
            if COMMITMENT_UNDELIVERABLE_METRIC in line and info.TransactionUID in line
        ]

    emitted = wait_until(emitted_lines, timeout=30)  # written just after the state changes
    assert len(emitted) == 1
    assert emitted[0][COMMITMENT_UNDELIVERABLE_METRIC] == [1.0]
    assert cloud.settings is not None
    (declaration,) = emitted[0]["_aws"]["CloudWatchMetrics"]
    assert declaration["Namespace"] == cloud.settings.metrics_namespace
    assert declaration["Metrics"] == [{"Name": COMMITMENT_UNDELIVERABLE_METRIC, "Unit": "Count"}]
    # And the admin CLI lists it, with the attempts made and the last error
    listed = json_lines(_admin(cloud, "commitment", "undeliverable").stdout)
    (entry,) = [e for e in listed if e["transaction_uid"] == info.TransactionUID]
    assert entry["state"] == "UNDELIVERABLE" and entry["attempts"] == 4
    assert entry["requester_ae"] == requester and entry["last_error"]
    # And once the requester's SCP is up, the operator's redeliver gets the report through
    receiver = CommitmentReceiver(requester, port=port)
    try:
        assert _admin(cloud, "commitment", "redeliver", info.TransactionUID).returncode == 0
        report = receiver.wait_report(timeout=60)
    finally:
        receiver.stop()
    assert report.event_type == 1
    wait_until(lambda: StorageCommitment.get(info.TransactionUID).state == "REPORTED")
    assert info.TransactionUID not in _admin(cloud, "commitment", "undeliverable").stdout


# --- several listener tasks: who reports, and only once ----------------------------------------


def _worker(cloud: LocalCloud, owner: str, **overrides: Any) -> CommitmentWorker:
    """A commitment worker as another listener task runs it (same tables, its own identity)."""
    settings = cloud.settings
    assert settings is not None
    options: dict[str, Any] = {
        "retry_base_seconds": 0.5,
        "max_attempts": 3,
        "delivery_timeout": 5.0,
        "same_association_timeout": 5.0,
        **overrides,
    }
    return CommitmentWorker(
        repository=CommitmentRepository(settings),
        index=IndexRepository(settings),
        objects=ObjectStore(settings),
        registry=CachedRegistry(Registry()),
        live=LiveAssociations(),
        archive_ae_title="ARCHIVE",
        owner=owner,
        **options,
    )


def _stored_transaction(cloud: LocalCloud, requester: str, *, origin: str, deadline_in: float) -> str:
    """Two stored, indexed instances of ``requester`` and a transaction for them received by ``origin``."""
    datasets = [ct_dataset(instance_number=i + 1) for i in range(2)]
    store_all(cloud, requester, datasets)
    wait_until(lambda: _indexed([str(ds.SOPInstanceUID) for ds in datasets]))
    assert cloud.settings is not None
    request = CommitmentRequest(
        new_uid(), tuple(Reference(CTImageStorage, str(ds.SOPInstanceUID)) for ds in datasets)
    )
    org_oid = Registry().get_ae(requester).org_oid
    now = time.time()
    assert CommitmentRepository(cloud.settings).create(
        request, requester_ae=requester, org_oid=org_oid, origin=origin, now=now, deadline=now + deadline_in
    )
    return request.transaction_uid


def test_workers_of_several_tasks_racing_report_once_to_a_slow_requester(cloud: LocalCloud) -> None:
    # Given a requester whose SCP takes 2 s to answer, and a settled transaction two tasks may take
    port = free_port()
    requester = organisation(cloud, port=port)
    receiver = CommitmentReceiver(requester, port=port, answer_after=2.0)
    a, b = _worker(cloud, "task-a"), _worker(cloud, "task-b", origin_grace=0.0)
    uid = _stored_transaction(cloud, requester, origin="task-a", deadline_in=-1.0)
    # The lease outlives the longest delivery attempt (every wait of it is bounded)
    assert a.lease_seconds > a.attempt_bound() > 2.0
    done = threading.Event()

    def keep_working(worker: CommitmentWorker) -> None:
        while not done.is_set():
            worker.run_once()
            done.wait(0.05)

    threads = [threading.Thread(target=keep_working, args=(w,)) for w in (a, b)]
    try:
        # When both keep polling while the report is on its way
        for thread in threads:
            thread.start()
        wait_until(lambda: StorageCommitment.get(uid).state == "REPORTED", timeout=60)
    finally:
        done.set()
        for thread in threads:
            thread.join(30)
        receiver.stop()
    # Then the requester got exactly one report
    assert receiver.reports.qsize() == 1
    assert receiver.wait_report(timeout=1).event_type == 1


def test_a_worker_that_lost_its_lease_does_not_report_again(cloud: LocalCloud) -> None:
    # Given a transaction taken by task A, which then stalls beyond its (short) lease
    port = free_port()
    requester = organisation(cloud, port=port)
    receiver = CommitmentReceiver(requester, port=port)
    a = _worker(cloud, "task-a2", lease_seconds=1.0)
    b = _worker(cloud, "task-b2", origin_grace=0.0)
    uid = _stored_transaction(cloud, requester, origin="task-a2", deadline_in=-1.0)
    try:
        stale = a.repository.lease(uid, a.owner, now=time.time(), seconds=a.lease_seconds, origin_grace=0)
        assert stale is not None
        assert b.repository.lease(uid, b.owner, now=time.time(), seconds=60, origin_grace=0) is None
        # When another task takes it over once the lease has run out, and reports
        wait_until(lambda: b.run_once() >= 0 and StorageCommitment.get(uid).state == "REPORTED", timeout=30)
        assert receiver.wait_report(timeout=10).event_type == 1
        # Then A, resuming, checks before reporting and sends nothing
        a.work(stale)
    finally:
        receiver.stop()
    assert receiver.reports.empty()
    assert StorageCommitment.get(uid).reported_on == "NEW_ASSOCIATION"


def test_before_its_deadline_a_transaction_is_left_to_the_task_that_received_it(cloud: LocalCloud) -> None:
    # Given a transaction received by task A, not yet due to be given up on
    port = free_port()
    requester = organisation(cloud, port=port)
    receiver = CommitmentReceiver(requester, port=port)
    a, b = _worker(cloud, "task-a3"), _worker(cloud, "task-b3")
    uid = _stored_transaction(cloud, requester, origin="task-a3", deadline_in=300.0)
    try:
        # Then another task does not take it (A holds the requester's association, if still open)
        assert b.repository.lease(uid, b.owner, now=time.time(), seconds=60, origin_grace=5) is None
        # While A does, and reports
        wait_until(lambda: a.run_once() >= 0 and StorageCommitment.get(uid).state == "REPORTED", timeout=30)
        assert receiver.wait_report(timeout=10).event_type == 1
    finally:
        receiver.stop()


def test_a_requester_that_does_not_answer_holds_up_no_other_organisations_report(cloud: LocalCloud) -> None:
    # Given organisation A's requester, whose SCP takes 20 s to answer a report, and a worker
    # whose delivery waits outlast that (so A's attempt holds whatever works on it for 20 s)
    slow_port, quick_port = free_port(), free_port()
    slow, quick = organisation(cloud, port=slow_port), organisation(cloud, port=quick_port)
    slow_receiver = CommitmentReceiver(slow, port=slow_port, answer_after=20.0)
    quick_receiver = CommitmentReceiver(quick, port=quick_port)
    worker = _worker(cloud, "task-hol", delivery_timeout=40.0)
    # (received by this worker's task and not past their deadlines: the listener's own worker
    # leaves them alone, so only this one can report them)
    slow_uid = _stored_transaction(cloud, slow, origin="task-hol", deadline_in=300.0)
    done = threading.Event()

    def keep_working() -> None:
        while not done.is_set():
            worker.run_once()
            done.wait(0.05)

    thread = threading.Thread(target=keep_working)
    thread.start()
    try:
        # While A's report is on its way and unanswered
        assert slow_receiver.wait_report(timeout=30).event_type == 1
        # When organisation B's transaction settles
        quick_uid = _stored_transaction(cloud, quick, origin="task-hol", deadline_in=300.0)
        # Then B's report arrives without waiting for A's answer
        assert quick_receiver.wait_report(timeout=12).event_type == 1
        assert StorageCommitment.get(slow_uid).state == "PENDING"
        wait_until(lambda: StorageCommitment.get(quick_uid).state == "REPORTED", timeout=10)
        # And A's is reported once it answers
        wait_until(lambda: StorageCommitment.get(slow_uid).state == "REPORTED", timeout=40)
    finally:
        done.set()
        thread.join(30)
        slow_receiver.stop()
        quick_receiver.stop()
    assert slow_receiver.reports.empty() and quick_receiver.reports.empty()
