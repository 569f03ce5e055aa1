"""Storage tiers end to end over real sockets and the local cloud: a lifecycle transition to Deep
Archive simulated in the stand-in (local.lifecycle: the object's class changes in place in moto and
the event AWS would emit goes to the storage-events queue), then NEARLINE in C-FIND (DCMTK findscu)
and in the IAN, a C-MOVE that sends the ONLINE instances and fails the NEARLINE ones with the retry
time while ONE restore of the study starts, the restore completing, an IAN with ONLINE to the
requester, and the C-MOVE succeeding with the stored bytes."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import pydicom
import pytest
from archive.data.models import Instance, Study
from archive.model.organisations import AEInfo, OrganisationInfo
from botocore.exceptions import ClientError
from lxml import etree
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, AllStoragePresentationContexts, build_role, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from local.cloud import DEMO_ARCHIVE, LocalCloud, free_port
from local.lifecycle import complete_restores, transition_study
from local.resources import client
from tests.integration.test_corrections import store_status
from tests.integration.test_registration import hetu
from tests.integration.test_xds_interface import assertion
from tests.support.cloud import admin_cli, admin_records, dcmtk, s3, storescu, wait_until
from tests.support.dicom import HETU_ISSUER, ct_dataset, new_uid, study, write
from tests.support.ian import IanReceiver
from tests.support.rejection import rejection_note, write_note
from tests.support.xds_http import RS, SOAP, ZeepXdsClient, error_codes, mime_parts

ORG_OID = "1.2.246.10.55550012.10"


def _findscu(cloud: LocalCloud, aet: str, outdir: Path, *keys: str) -> list[Dataset]:
    outdir.mkdir(parents=True, exist_ok=True)
    args = ["-S", "-aet", aet, "-aec", "ARCHIVE", "-X", "-od", str(outdir)]
    for key in keys:
        args += ["-k", key]
    result = dcmtk("findscu", *args, "127.0.0.1", str(cloud.dicom_port))
    assert result.returncode == 0, result.stderr
    return [pydicom.dcmread(p) for p in sorted(outdir.glob("rsp*.dcm"))]


class _Receiver:
    """A pynetdicom Storage SCP (the move destination) that keeps what it receives."""

    def __init__(self, ae_title: str, port: int) -> None:
        self.datasets: list[Dataset] = []
        ae = AE(ae_title=ae_title)
        for cx in AllStoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax)

        def on_store(event: Any) -> int:
            self.datasets.append(event.dataset)
            return 0x0000

        self.server = ae.start_server(
            ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)]
        )


def _move(cloud: LocalCloud, aet: str, destination: str, study_uid: str) -> tuple[Dataset, Dataset | None]:
    """pynetdicom C-MOVE of a study; the final response's status and identifier (which carries the
    Failed SOP Instance UID List)."""
    ae = AE(ae_title=aet)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate("127.0.0.1", cloud.dicom_port, ae_title="ARCHIVE")
    assert assoc.is_established
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = study_uid
    try:
        responses = list(
            assoc.send_c_move(identifier, destination, StudyRootQueryRetrieveInformationModelMove)
        )
    finally:
        assoc.release()
    final, failed = responses[-1]
    assert final is not None
    return final, failed


def _get_status(cloud: LocalCloud, aet: str, study_uid: str) -> Dataset:
    """pynetdicom C-GET of a study (receiving on the same association); the final status."""
    ae = AE(ae_title=aet)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    for cx in AllStoragePresentationContexts[:100]:
        ae.add_requested_context(cx.abstract_syntax)
    assoc = ae.associate(
        "127.0.0.1",
        cloud.dicom_port,
        ae_title="ARCHIVE",
        ext_neg=[build_role(CTImageStorage, scp_role=True)],
        evt_handlers=[(evt.EVT_C_STORE, lambda event: 0x0000)],
    )
    assert assoc.is_established
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = study_uid
    try:
        responses = list(assoc.send_c_get(identifier, StudyRootQueryRetrieveInformationModelGet))
    finally:
        assoc.release()
    final = responses[-1][0]
    assert final is not None
    return final


@pytest.fixture(scope="module")
def customer(cloud: LocalCloud) -> tuple[str, str, int, int]:
    """An organisation whose PACS queries, retrieves and takes IANs, and a move destination."""
    pacs, destination = "TIER_PACS", "TIER_DEST"
    pacs_port, destination_port = free_port(), free_port()
    org = OrganisationInfo(ORG_OID, "Tier test hospital", trusted_issuers=(HETU_ISSUER,))
    cloud.register(
        org,
        AEInfo(pacs, ORG_OID, "127.0.0.1", pacs_port, roles=("store", "query", "retrieve", "ian")),
        AEInfo(destination, ORG_OID, "127.0.0.1", destination_port, roles=("move-destination",)),
    )
    cloud.configure_registration(ORG_OID, stability_seconds=1.0, register_uncommitted=True)
    return pacs, destination, pacs_port, destination_port


def test_nearline_in_find_and_ian_restore_on_move_then_online_again(
    cloud: LocalCloud, workdir: Path, customer: tuple[str, str, int, int]
) -> None:
    pacs, destination, pacs_port, destination_port = customer
    assert cloud.settings is not None
    ians = IanReceiver(pacs, pacs_port)
    receiver = _Receiver(destination, destination_port)
    try:
        # Given a stored, registered study of four instances (its first IAN says ONLINE)
        files = study(workdir, 4, patient_id="010199A9111")
        sent = {str(pydicom.dcmread(f).SOPInstanceUID): pydicom.dcmread(f) for f in files}
        study_uid = str(next(iter(sent.values())).StudyInstanceUID)
        assert storescu(cloud, files, aet=pacs).returncode == 0
        wait_until(lambda: (s := Study.get(study_uid)) and s.number_of_instances == 4, timeout=90)
        first = ians.wait_for(study_uid, count=4, timeout=90)
        assert {a for _, _, a, _ in first.instances().values()} == {"ONLINE"}
        versions = {uid: Instance.get(uid).s3_version_id for uid in sent}

        # When a lifecycle transition moves two of its objects to Deep Archive (simulated)
        cold = sorted(sent)[:2]
        assert transition_study(cloud.settings, study_uid, "DEEP_ARCHIVE", cold) == 2

        # Then S3 refuses to read them without a restore, and the index learns it from the events
        bucket = cloud.settings.bucket
        with pytest.raises(ClientError) as refused:
            s3(cloud).get_object(Bucket=bucket, Key=Instance.get(cold[0]).s3_key)
        assert refused.value.response["Error"]["Code"] == "InvalidObjectState"
        wait_until(lambda: Study.get(study_uid, consistent_read=True).nearline_instances == 2, timeout=30)

        # And C-FIND (DCMTK findscu) says NEARLINE for the study, the series and the cold instances
        (at_study,) = _findscu(
            cloud, pacs, workdir / "f1", "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={study_uid}",
            "InstanceAvailability",
        )  # fmt: skip
        assert at_study.InstanceAvailability == "NEARLINE"
        (at_series,) = _findscu(
            cloud, pacs, workdir / "f2", "QueryRetrieveLevel=SERIES", f"StudyInstanceUID={study_uid}",
            "SeriesInstanceUID", "InstanceAvailability",
        )  # fmt: skip
        assert at_series.InstanceAvailability == "NEARLINE"
        images = _findscu(
            cloud, pacs, workdir / "f3", "QueryRetrieveLevel=IMAGE", f"StudyInstanceUID={study_uid}",
            "SeriesInstanceUID", "SOPInstanceUID", "InstanceAvailability",
        )  # fmt: skip
        assert {str(d.SOPInstanceUID): d.InstanceAvailability for d in images} == {
            uid: ("NEARLINE" if uid in cold else "ONLINE") for uid in sent
        }

        # And an IAN of the study (the operator's resend) says NEARLINE for exactly those
        admin_records(cloud, "ian", "resend", study_uid)
        resent = ians.wait_for(study_uid, count=4, timeout=60)
        assert {uid: a for uid, (_, _, a, _) in resent.instances().items()} == {
            uid: ("NEARLINE" if uid in cold else "ONLINE") for uid in sent
        }

        # When the PACS moves the study
        status, failed = _move(cloud, pacs, destination, study_uid)

        # Then the ONLINE instances are sent, the NEARLINE ones fail with the time to retry
        assert status.Status == 0xB000
        assert status.NumberOfCompletedSuboperations == 2
        assert status.NumberOfFailedSuboperations == 2
        assert "NEARLINE: restoring, retry after" in str(status.ErrorComment)
        assert failed is not None and sorted(failed.FailedSOPInstanceUIDList) == cold
        assert sorted(str(d.SOPInstanceUID) for d in receiver.datasets) == sorted(set(sent) - set(cold))

        # And ONE restore of the study was opened and its job asked S3 for every cold object
        restore = wait_until(
            lambda: (s := Study.get(study_uid, consistent_read=True)).restore_state == "RESTORING" and s,
            timeout=30,
        )
        assert set(restore.restore_requesters or ()) == {pacs}
        shown = admin_records(cloud, "restore", "show", study_uid)[0]
        assert shown["nearline_instances"] == 2 and shown["restore_state"] == "RESTORING"
        for uid in cold:
            head = s3(cloud).head_object(Bucket=bucket, Key=Instance.get(uid).s3_key)
            assert head["StorageClass"] == "DEEP_ARCHIVE" and "Restore" in head

        # When a C-GET asks again before the restore is done
        again = _get_status(cloud, pacs, study_uid)
        # Then it gets the same answer and no second restore (same request time)
        assert again.NumberOfFailedSuboperations == 2 and again.NumberOfCompletedSuboperations == 2
        assert "retry after" in str(again.ErrorComment)
        assert Study.get(study_uid, consistent_read=True).restore_requested_at == restore.restore_requested_at

        # When S3 reports the restores completed (simulated: "Object Restore Completed" events)
        assert complete_restores(cloud.settings, study_uid) == 2

        # Then the index is ONLINE again, the restore is closed and the requester gets an IAN
        wait_until(
            lambda: (
                (s := Study.get(study_uid, consistent_read=True)).restore_state is None
                and not s.nearline_instances
            ),
            timeout=30,
        )
        online = ians.wait_for(study_uid, count=4, timeout=60)
        assert {a for _, _, a, _ in online.instances().values()} == {"ONLINE"}
        (at_study,) = _findscu(
            cloud, pacs, workdir / "f4", "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={study_uid}",
            "InstanceAvailability",
        )  # fmt: skip
        assert at_study.InstanceAvailability == "ONLINE"

        # And a C-MOVE now sends every instance, with the stored pixel data
        receiver.datasets.clear()
        status, _ = _move(cloud, pacs, destination, study_uid)
        assert status.Status == 0x0000 and status.NumberOfCompletedSuboperations == 4
        assert {str(d.SOPInstanceUID): d.PixelData for d in receiver.datasets} == {
            uid: ds.PixelData for uid, ds in sent.items()
        }
        # And the objects are the same versions with the same bytes (a transition moves no data)
        for uid in sent:
            item = Instance.get(uid)
            assert item.s3_version_id == versions[uid]
            body = s3(cloud).get_object(Bucket=bucket, Key=item.s3_key, VersionId=item.s3_version_id)["Body"]
            assert hashlib.sha256(body.read()).hexdigest() == item.sha256
    finally:
        ians.server.shutdown()
        receiver.server.shutdown()


def test_a_repeated_storage_event_changes_nothing(
    cloud: LocalCloud, workdir: Path, customer: tuple[str, str, int, int]
) -> None:
    pacs = customer[0]
    assert cloud.settings is not None
    files = study(workdir, 2, patient_id="010199A9122")
    study_uid = str(pydicom.dcmread(files[0]).StudyInstanceUID)
    assert storescu(cloud, files, aet=pacs).returncode == 0
    wait_until(lambda: (s := Study.get(study_uid)) and s.number_of_instances == 2, timeout=90)
    # Given a study moved to Deep Archive
    assert transition_study(cloud.settings, study_uid) == 2
    wait_until(lambda: Study.get(study_uid, consistent_read=True).nearline_instances == 2, timeout=30)
    # When the same transition events arrive again (SQS delivers at least once)
    assert transition_study(cloud.settings, study_uid) == 2
    sqs = client("sqs", cloud.endpoint)
    queue = cloud.queues["storage-events"].url
    wait_until(
        lambda: (
            sqs.get_queue_attributes(
                QueueUrl=queue,
                AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
            )["Attributes"]
            == {"ApproximateNumberOfMessages": "0", "ApproximateNumberOfMessagesNotVisible": "0"}
        ),
        timeout=30,
    )
    # Then the counts are unchanged, and an operator's restore is one request however often asked
    assert Study.get(study_uid, consistent_read=True).nearline_instances == 2
    first = admin_records(cloud, "restore", "study", study_uid)[0]
    second = admin_records(cloud, "restore", "study", study_uid)[0]
    assert first["newly_requested"] is True and second["newly_requested"] is False
    assert first["requested_at"] == second["requested_at"]


def test_rad69_of_nearline_instances_answers_busy_with_the_retry_time_and_opens_one_restore(
    cloud: LocalCloud, tmp_path: Path
) -> None:
    """RAD-69 (zeep, the demo organisation's XUA) of a study two of whose three objects went to
    Deep Archive: the ONLINE one is delivered, each NEARLINE one is an XDSRepositoryBusy error saying
    when to retry, and the study's ONE restore is opened, as a C-MOVE would open it."""
    assert cloud.settings is not None
    pid, study_uid, series_uid = hetu(), new_uid(), new_uid()
    datasets = [
        ct_dataset(patient_id=pid, study_uid=study_uid, series_uid=series_uid, instance_number=n + 1)
        for n in range(3)
    ]
    assert storescu(cloud, [write(ds, tmp_path) for ds in datasets], aet="DEMO_MOD").returncode == 0
    wait_until(lambda: (s := Study.get(study_uid)) and s.number_of_instances == 3, timeout=90)
    uids = [str(ds.SOPInstanceUID) for ds in datasets]
    cold = sorted(uids)[:2]
    # Given two of its objects moved to Deep Archive (simulated) and the index knowing it
    assert transition_study(cloud.settings, study_uid, "DEEP_ARCHIVE", cold) == 2
    wait_until(lambda: Study.get(study_uid, consistent_read=True).nearline_instances == 2, timeout=30)

    # When zeep asks RAD-69 for all three
    cx = f"{pid}^^^&{HETU_ISSUER}&ISO"
    response = ZeepXdsClient(cloud.xds_url).retrieve_images(
        study_uid, {series_uid: uids}, repository_unique_id=DEMO_ARCHIVE.repository_unique_id,
        syntaxes=[ExplicitVRLittleEndian], assertion=assertion(cx),
    )  # fmt: skip

    # Then the answer is a partial success: the ONLINE instance as a part, the cold ones busy
    assert response.status_code == 200
    parts = mime_parts(response)
    body = etree.fromstring(parts[0][1]).find(f"{{{SOAP}}}Body")[0]  # type: ignore[index]
    status = body.find(f"{{{RS}}}RegistryResponse")
    assert status is not None and status.get("status", "").endswith(":PartialSuccess")
    busy = {e.get("location"): e.get("codeContext", "") for e in body.iter(f"{{{RS}}}RegistryError")}
    assert error_codes(body) == ["XDSRepositoryBusy"] * 2 and sorted(busy) == cold
    assert all("NEARLINE: restoring, retry after" in text for text in busy.values())
    [(kind, part)] = parts[1:]
    assert kind == "application/dicom"
    assert pydicom.dcmread(io.BytesIO(part)).SOPInstanceUID == next(u for u in uids if u not in cold)
    # And ONE restore of the study is open, its job asking S3 for both cold objects
    wait_until(lambda: Study.get(study_uid, consistent_read=True).restore_state == "RESTORING", timeout=30)
    for uid in cold:
        head = s3(cloud).head_object(Bucket=cloud.settings.bucket, Key=Instance.get(uid).s3_key)
        assert "Restore" in head


def test_a_rejected_nearline_instance_no_longer_makes_its_study_nearline(
    cloud: LocalCloud, workdir: Path, customer: tuple[str, str, int, int]
) -> None:
    pacs = customer[0]
    assert cloud.settings is not None
    (workdir / "s").mkdir()
    files = study(workdir / "s", 2, patient_id=hetu())
    study_uid = str(pydicom.dcmread(files[0]).StudyInstanceUID)
    assert storescu(cloud, files, aet=pacs).returncode == 0
    wait_until(lambda: (s := Study.get(study_uid)) and s.number_of_instances == 2, timeout=90)
    # Given a study with one instance in Deep Archive
    cold = str(pydicom.dcmread(files[0]).SOPInstanceUID)
    assert transition_study(cloud.settings, study_uid, sop_instance_uids={cold}) == 1
    wait_until(lambda: Study.get(study_uid, consistent_read=True).nearline_instances == 1, timeout=30)

    def availability(level: str, outdir: str) -> str:
        (found,) = _findscu(
            cloud, pacs, workdir / outdir, f"QueryRetrieveLevel={level}", f"StudyInstanceUID={study_uid}",
            "SeriesInstanceUID", "InstanceAvailability",
        )  # fmt: skip
        return str(found.InstanceAvailability)

    assert availability("STUDY", "f1") == "NEARLINE"
    # When the customer rejects that instance (a KOS rejection note sent by DCMTK storescu)
    kos = rejection_note([files[0]])
    kos.IssuerOfPatientID = HETU_ISSUER  # (highdicom does not copy it; the organisation has no default)
    note = write_note(kos, workdir)
    assert store_status(cloud, note, pacs) == 0x0000
    # Then the study and its series count no NEARLINE instance: C-FIND says ONLINE for both
    assert Study.get(study_uid, consistent_read=True).nearline_instances == 0
    assert (availability("STUDY", "f2"), availability("SERIES", "f3")) == ("ONLINE", "ONLINE")
    # And storage events for the rejected instance change its availability but no count
    assert transition_study(cloud.settings, study_uid, "GLACIER_IR", sop_instance_uids={cold}) == 1
    wait_until(lambda: Instance.get(cold, consistent_read=True).availability is None, timeout=30)
    assert Study.get(study_uid, consistent_read=True).nearline_instances == 0
    assert transition_study(cloud.settings, study_uid, sop_instance_uids={cold}) == 1
    wait_until(lambda: Instance.get(cold, consistent_read=True).availability == "NEARLINE", timeout=30)
    assert Study.get(study_uid, consistent_read=True).nearline_instances == 0
    # And when an operator revokes the rejection, the instance counts as NEARLINE again
    revoked = admin_cli(cloud, "rejection", "revoke", str(note_uid(note)), "--by", "Olli", "--reason", "t")
    assert revoked.returncode == 0, revoked.stderr
    assert Study.get(study_uid, consistent_read=True).nearline_instances == 1
    assert availability("STUDY", "f4") == "NEARLINE"


def note_uid(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
