"""IAN delivery survives what happens to it: a destination that is down for a while, one that never
comes up (dead-letter queue, then the operator's resend), and a sender killed mid-delivery. Each
organisation gets only its own notifications."""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
from archive.data.models import IanNotification, Registration
from archive.data.xds_registry import XdsRegistry
from archive.model.organisations import AEInfo, OrganisationInfo
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from local.cloud import LocalCloud, free_port
from local.resources import client
from tests.support.cloud import admin_records, storescu, wait_until
from tests.support.dicom import HETU_ISSUER, ct_dataset, new_uid, write
from tests.support.ian import IanReceiver
from tests.support.scu import Modality, action_information

ROOT = Path(__file__).resolve().parents[2]


def organisation(cloud: LocalCloud, name: str) -> tuple[OrganisationInfo, str, int]:
    """A registered organisation with a modality (store, commitment) and a PACS (ian) on a free port."""
    oid = f"1.2.246.10.{abs(hash(name + new_uid())) % 10**8}.10"
    org = OrganisationInfo(oid, f"Hospital {name}", trusted_issuers=(HETU_ISSUER,))
    port = free_port()
    cloud.register(
        org,
        AEInfo(f"{name}_MOD", oid, "127.0.0.1", free_port(), roles=("store", "commitment")),
        AEInfo(f"{name}_PACS", oid, "127.0.0.1", port, roles=("ian",)),
    )
    cloud.configure_registration(oid, stability_seconds=1.0)
    return org, f"{name}_PACS", port


def committed_study(cloud: LocalCloud, workdir: Path, aet: str, count: int = 1) -> str:
    study_uid = new_uid()
    files = [write(ct_dataset(study_uid=study_uid, instance_number=i + 1), workdir) for i in range(count)]
    result = storescu(cloud, files, aet=aet)
    assert result.returncode == 0, result.stderr
    refs = [(CTImageStorage, str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID)) for f in files]
    modality = Modality(cloud.dicom_port, ae_title=aet)
    try:
        assert modality.request_commitment(action_information(refs)) == 0x0000
        assert modality.wait_report(timeout=90).event_type == 1
    finally:
        modality.release()
    return study_uid


def notification(study_uid: str) -> IanNotification | None:
    return next(iter(IanNotification.query(study_uid, consistent_read=True)), None)


admin = admin_records


def test_ian_waits_for_a_destination_that_is_down_and_gives_up_to_the_dlq_then_resends(
    cloud: LocalCloud, workdir: Path
) -> None:
    org_b, pacs_b, port_b = organisation(cloud, "IANB")
    org_c, pacs_c, port_c = organisation(cloud, "IANC")
    # Given organisation B's PACS is down: B's study is registered and its IAN fails every attempt
    given_up = committed_study(cloud, workdir, "IANB_MOD")
    failed = wait_until(
        lambda: (n := notification(given_up)) and n.state == "FAILED" and n, timeout=90, interval=0.3
    )
    # Then after the configured five attempts it is FAILED, dead-lettered and listed for the operator
    assert failed.attempts == 5 and failed.destination_ae == pacs_b and "refused" in (failed.last_error or "")
    assert cloud.settings is not None
    dlq = cloud.queues["ian"].dlq_url
    sqs = client("sqs", cloud.endpoint)
    dead = wait_until(
        lambda: [
            json.loads(m["Body"])
            for m in sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10, VisibilityTimeout=1).get(
                "Messages", []
            )
        ],
        timeout=30,
    )
    assert any(m["study_uid"] == given_up for m in dead)
    assert given_up in {n["study_uid"] for n in admin(cloud, "ian", "list", "--state", "FAILED")}

    # Given organisation C's PACS is up: C's study is confirmed to C
    receiver_c = IanReceiver(pacs_c, port_c)
    try:
        study_c = committed_study(cloud, workdir, "IANC_MOD")
        receiver_c.wait_for(study_c, timeout=60)
        # Given a second study of B while B's PACS is still down, its IAN failed once
        late = committed_study(cloud, workdir, "IANB_MOD")
        wait_until(lambda: (n := notification(late)) and (n.attempts or 0) >= 1, timeout=180, interval=0.2)
        # When B's PACS comes up (before the attempts run out)
        receiver_b = IanReceiver(pacs_b, port_b)
        try:
            # Then the pending IAN arrives with the next attempt
            receiver_b.wait_for(late, timeout=60)
            wait_until(lambda: notification(late).state == "DELIVERED", timeout=30)
            assert notification(late).attempts >= 2
            # And the operator's resend delivers the one that was given up
            [resent] = admin(cloud, "ian", "resend", given_up)
            assert resent["destination_ae"] == pacs_b
            receiver_b.wait_for(given_up, timeout=60)
            wait_until(lambda: notification(given_up).state == "DELIVERED", timeout=30)
            assert given_up not in {n["study_uid"] for n in admin(cloud, "ian", "list", "--state", "FAILED")}
            # And each study is registered under its own organisation's control
            assert cloud.settings is not None
            registry = XdsRegistry(cloud.settings)
            for study_uid, org in ((late, org_b), (given_up, org_b), (study_c, org_c)):
                state = Registration.get(study_uid)
                assert state.org_oid == org.oid
                [entry] = registry.documents_by_uuid([state.entry_uuid])
                assert entry.controller == org.oid and org.name in entry.authors[0].institutions[0]
            # And neither organisation ever got the other's notifications
            assert study_c not in receiver_b.studies()
            assert {late, given_up}.isdisjoint(receiver_c.studies())
        finally:
            receiver_b.stop()
    finally:
        receiver_c.stop()


def test_ian_arrives_although_the_sending_process_is_killed_mid_delivery(
    cloud: LocalCloud, workdir: Path
) -> None:
    _, pacs, port = organisation(cloud, "IANK")
    # Given a PACS that holds the first N-CREATE unanswered
    receiver = IanReceiver(pacs, port, hold=True)
    try:
        study_uid = committed_study(cloud, workdir, "IANK_MOD")
        assert receiver.holding.wait(60), "the IAN never reached the PACS"
        # When the process running the send_ian Lambda is killed (SIGKILL) in the middle of it
        cloud.stop_function_process("send_ian", kill=True)
        receiver.release()
        assert notification(study_uid).state == "PENDING"
        cloud.start_function_process("send_ian")
        # Then the message comes back after its visibility timeout and the IAN is delivered
        wait_until(lambda: notification(study_uid).state == "DELIVERED", timeout=90, interval=0.3)
        assert sum(1 for n in receiver.all if n.study_uid == study_uid) >= 2
    finally:
        receiver.stop()
