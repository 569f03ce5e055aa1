"""Retrieval under repetition and hostile input: the C-MOVE that stalled, the access record written
before anything leaves, and the listener's PDU bound."""

from __future__ import annotations

import socket
import struct
import threading
from pathlib import Path
from typing import Any

import pydicom
from archive.data.models import AccessRecord
from archive.model.organisations import AEInfo
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelMove,
)

from listeners.dicom.connection import MAX_PDU_BYTES, SpooledSubOperation, StoreSender
from local.cloud import LocalCloud
from tests.integration.test_query_retrieve import Receiver, customer, hetu, store_study, sub
from tests.support.dicom import HETU_ISSUER, study
from tests.support.netns import IsolatedHost

MOVES = 4
INSTANCES = 150


def _move(cloud: LocalCloud, calling: str, destination: str, study_uid: str) -> list[Dataset]:
    ae = AE(ae_title=calling)
    ae.dimse_timeout = 150
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate("127.0.0.1", cloud.dicom_port, ae_title="ARCHIVE")
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study_uid
    statuses = [
        status
        for status, _ in assoc.send_c_move(query, destination, StudyRootQueryRetrieveInformationModelMove)
    ]
    assoc.release()
    return statuses


def _listener_log(cloud: LocalCloud) -> str:
    assert cloud.log_dir is not None
    return (cloud.log_dir / "dicom.log").read_text(errors="replace")


def test_repeated_move_of_a_study_never_stalls(cloud: LocalCloud, workdir: Path) -> None:
    # Given a study of 200 instances and DCMTK storescp (discarding what it gets) as destination
    c = customer(cloud)
    study_uid = store_study(cloud, c, study(sub(workdir, "s"), INSTANCES, patient_id=hetu()))
    log_before = len(_listener_log(cloud))
    with IsolatedHost() as host:
        host.spawn(
            ["/usr/bin/storescp", "-v", "--ignore", "-aet", "STALL_DEST", "11112"], workdir / "scp.log"
        )
        host.wait_listening(11112)
        cloud.register(
            c.org, AEInfo("STALL_DEST", c.org.oid, host.address, 11112, roles=("move-destination",))
        )
        # When it is moved there four times, one after the other (600 C-STORE sub-operations)
        finals = [_move(cloud, c.scu, "STALL_DEST", study_uid)[-1] for _ in range(MOVES)]
    # Then every move delivered every instance. Before the fix, about one sub-operation in a few
    # hundred lost its response to the association's own reactor: the move waited out the 120 s
    # DIMSE timeout, aborted, and failed the rest (3 of 5 runs of 300 instances here).
    for final in finals:
        assert final.Status == 0x0000, final
        assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (INSTANCES, 0)
    log = _listener_log(cloud)[log_before:]
    assert "Received unexpected C-STORE service message" not in log
    assert "DIMSE timeout reached" not in log


def test_a_polling_reactor_cannot_take_a_c_store_response_from_the_sender(workdir: Path) -> None:
    """The stall's mechanism, made certain: a thread polling the association's DIMSE queue without
    blocking (what pynetdicom's reactor does when its pause handshake loses the race) runs all the
    time while C-STOREs are sent; none of their responses may go to it."""
    # Given a pynetdicom storage SCP on loopback and an association to it, guarded by StoreSender
    scp = AE(ae_title="STORE_SCP")
    scp.add_supported_context(CTImageStorage, ExplicitVRLittleEndian)
    server = scp.start_server(
        ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, lambda e: 0x0000)]
    )
    scu = AE(ae_title="SENDER")
    scu.dimse_timeout = 5
    scu.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = scu.associate("127.0.0.1", server.server_address[1], ae_title="STORE_SCP")
    assert assoc.is_established
    sender = StoreSender(assoc)
    stolen: list[Any] = []
    stop = threading.Event()

    def reactor_that_lost_the_race() -> None:
        while not stop.is_set():
            _, message = assoc.dimse.get_msg(False)
            if message is not None:
                stolen.append(message)

    thief = threading.Thread(target=reactor_that_lost_the_race, daemon=True)
    thief.start()
    try:
        # When 40 objects are sent from spool files through the sender
        statuses = []
        for path in study(sub(workdir, "spool"), 40, patient_id=hetu()):
            statuses.append(
                int(assoc.send_c_store(SpooledSubOperation(CTImageStorage, path.stem, path)).Status)
            )
    finally:
        stop.set()
        thief.join(5)
        sender.detach()
        assoc.release()
        server.shutdown()
    # Then every response reached the sender, none the polling thread (unguarded, it takes most)
    assert statuses == [0x0000] * 40 and stolen == []


def test_access_record_is_written_before_the_first_object_leaves(cloud: LocalCloud, workdir: Path) -> None:
    # Given a stored study of three instances
    c = customer(cloud)
    pid = hetu()
    files = study(sub(workdir, "a"), 3, patient_id=pid)
    study_uid = store_study(cloud, c, files)
    key = f"{pid}^^^{HETU_ISSUER}"
    sops = sorted(str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files)
    seen_at_first_store: list[list[AccessRecord]] = []

    def on_store(event: Any) -> int:
        if not seen_at_first_store:
            seen_at_first_store.append([r for r in AccessRecord.query(key) if r.operation == "C-MOVE"])
        return 0x0000

    # When it is moved, and the receiver looks at the access log when the first object arrives
    with Receiver(c.dest_port, c.dest) as receiver:
        receiver.server.bind(evt.EVT_C_STORE, on_store)
        final = _move(cloud, c.scu, c.dest, study_uid)[-1]
    assert final.Status == 0x0000
    # Then a record of what was about to be sent existed already, naming every instance
    [started] = seen_at_first_store[0]
    assert started.outcome.startswith("STARTED") and sorted(started.instances or []) == sops
    assert started.destination_ae == c.dest and started.org_oid == c.org.oid
    # and afterwards a second record of the same request completes it
    records = [r for r in AccessRecord.query(key) if r.operation == "C-MOVE"]
    [completed] = [r for r in records if r.event_id == started.event_id and r.at_event != started.at_event]
    assert completed.outcome == "COMPLETED" and sorted(completed.instances or []) == sops


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_listener_announces_a_bounded_pdu_and_refuses_a_longer_one(cloud: LocalCloud) -> None:
    # Given the listener's announced maximum PDU length (pynetdicom SCU association)
    ae = AE(ae_title="DEMO_MOD")
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate("127.0.0.1", cloud.dicom_port, ae_title="ARCHIVE")
    assert assoc.is_established
    announced = assoc.acceptor.maximum_length
    assoc.release()
    assert announced == MAX_PDU_BYTES != 0
    # When a peer sends a PDU header claiming 1 GiB and starts streaming its body
    assert cloud.dicom_process is not None
    rss_before = _rss_kib(cloud.dicom_process.pid)
    sent = 0
    with socket.create_connection(("127.0.0.1", cloud.dicom_port), timeout=10) as sock:
        sock.sendall(struct.pack(">BBL", 0x01, 0, 1024**3))
        chunk = bytes(1024 * 1024)
        try:
            while sent < 256 * 1024 * 1024:
                sock.sendall(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass
    # Then the listener closed the connection long before the claimed length, without holding it
    assert sent < 64 * 1024 * 1024, sent
    assert _rss_kib(cloud.dicom_process.pid) - rss_before < 32 * 1024
    # and still serves others
    assoc = ae.associate("127.0.0.1", cloud.dicom_port, ae_title="ARCHIVE")
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0x0000
    assoc.release()
