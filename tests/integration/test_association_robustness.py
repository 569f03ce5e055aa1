"""Issue 15 finding 3: a failure of pynetdicom's upper-layer state machine in a connection thread is
logged and that association closed cleanly; the listener keeps serving."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from listeners.dicom.server import guard_protocol_errors
from local.cloud import LocalCloud
from tests.support.cloud import ListenerLog, dcmtk

A_RELEASE_RQ = b"\x05\x00\x00\x00\x00\x04\x00\x00\x00\x00"


@pytest.fixture
def thread_failures() -> Iterator[list[BaseException]]:
    """Exceptions that escape any thread while the test runs."""
    failures: list[BaseException] = []
    previous = threading.excepthook
    threading.excepthook = lambda args: failures.append(args.exc_value)  # type: ignore[arg-type,misc]
    try:
        yield failures
    finally:
        threading.excepthook = previous


def _wait_closed(sock: socket.socket, timeout: float = 15.0) -> bytes:
    """Read until the peer closes the connection; fail if it stays open."""
    sock.settimeout(timeout)
    received = b""
    try:
        while chunk := sock.recv(4096):
            received += chunk
    except ConnectionResetError:
        pass
    return received


def test_invalid_event_in_the_state_machine_aborts_the_association_and_the_server_serves_on(
    thread_failures: list[BaseException],
) -> None:
    # Given an SCP with the listener's guard, whose state machine meets an event that is invalid in
    # its state (an A-RELEASE response nobody asked for, as when a peer's release requests cross)
    def invalid_event(event: Any) -> int:
        event.assoc.dul.event_queue.put("Evt14")
        return 0x0000

    scp = AE("GUARDED")
    scp.add_supported_context(Verification)
    server = scp.start_server(
        ("127.0.0.1", 0),
        block=False,
        evt_handlers=[(evt.EVT_CONN_OPEN, guard_protocol_errors), (evt.EVT_C_ECHO, invalid_event)],
    )
    try:
        port = server.server_address[1]
        scu = AE("PEER")
        scu.add_requested_context(Verification)
        scu.network_timeout = 15
        # When a peer echoes
        assoc = scu.associate("127.0.0.1", port)
        assert assoc.is_established
        assoc.send_c_echo()
        # Then the association is aborted by the SCP, not left hanging with a dead thread
        deadline = time.monotonic() + 15
        while assoc.is_established and time.monotonic() < deadline:
            time.sleep(0.01)
        assert assoc.is_aborted
        assert thread_failures == []
        # And the SCP accepts the next association
        again = scu.associate("127.0.0.1", port)
        assert again.is_established
        again.release()
    finally:
        server.shutdown()


def test_three_release_requests_in_a_row_close_the_association_and_the_listener_serves_on(
    cloud: LocalCloud,
) -> None:
    log = ListenerLog(cloud)
    # Given peers that, once associated, send three A-RELEASE-RQ back to back (20 times: the
    # failure depends on how the release requests and the archive's response cross)
    for _ in range(20):
        ae = AE("DEMO_MOD")
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", cloud.dicom_port, ae_title="ARCHIVE")
        assert assoc.is_established
        sock = assoc.dul.socket.socket
        # Stop pynetdicom's own reactor from reading, so the raw bytes are ours alone
        assoc.dul._kill_thread = True
        assoc.dul.join(5)
        sock.sendall(A_RELEASE_RQ * 3)
        # Then the archive answers (A-RELEASE-RP or A-ABORT) and closes the connection
        answer = _wait_closed(sock)
        assert answer[:1] in (b"\x06", b"\x07")
        sock.close()
    # And nothing escaped a connection thread
    text = log.text()
    assert "Traceback" not in text
    assert "Exception in thread" not in text
    # And the listener still answers
    echo = dcmtk("echoscu", "-aet", "DEMO_MOD", "-aec", "ARCHIVE", "127.0.0.1", str(cloud.dicom_port))
    assert echo.returncode == 0, echo.stderr
