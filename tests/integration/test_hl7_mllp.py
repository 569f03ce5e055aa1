"""Given the HL7 listener, when senders misbehave at the MLLP or the message level, then every
frame gets the ACK the conformance statement promises and the listener stays up."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
from archive.data.patients import PatientRepository
from archive.model.identity import PatientIdentity

from local.cloud import LocalCloud
from tests.support.hl7 import (
    TEMP_ISSUER,
    Ack,
    adt,
    connect,
    exchange,
    frame,
    fresh_id,
    read_frames,
    separate_listener,
    wait_for_change,
)

LIMIT = 4096


@pytest.fixture(scope="module")
def strict_port(cloud: LocalCloud) -> Iterator[int]:
    """A second listener with a small message limit and a one-second idle timeout."""
    with separate_listener(cloud, HL7_MAX_MESSAGE_BYTES=str(LIMIT), HL7_IDLE_TIMEOUT_SECONDS="1") as port:
        yield port


def test_several_split_frames_with_garbage_between_are_each_acknowledged(cloud: LocalCloud) -> None:
    # Given three messages framed on one connection, with bytes outside frames and a frame the
    # sender abandoned (a new start block before its end)
    ids = [fresh_id() for _ in range(3)]
    messages = [adt("A31", pid, control_id=f"C{pid}") for pid in ids]
    stream = (
        b"\r\n"
        + frame(messages[0])
        + b"garbage between frames\r"
        + b"\x0bMSH|^~\\&|abandoned"
        + frame(messages[1])
        + b"\n\n"
        + frame(messages[2])
    )
    # When the stream is written a few bytes at a time
    chunks = [stream[i : i + 7] for i in range(0, len(stream), 7)]
    acks = exchange(cloud.hl7_port, chunks, expect=3)
    # Then each message got its AA, in order, and their changes were applied
    assert [(a.code, a.control_id) for a in acks] == [("AA", f"C{pid}") for pid in ids]
    for pid in ids:
        assert wait_for_change(cloud, PatientIdentity(pid, TEMP_ISSUER), f"C{pid}")["outcome"] == "APPLIED"


def test_malformed_and_unsupported_messages_get_their_error_codes(cloud: LocalCloud) -> None:
    pid = fresh_id()
    latin1_as_utf8 = adt("A31", pid, name="Ääri^Åke", charset="UNICODE UTF-8", encoding="latin-1")
    cases: list[tuple[bytes, tuple[str, str | None, str | None]]] = [
        (b"this is not HL7", ("AR", "100", "MSH")),
        (adt("O01", pid).replace(b"ADT^O01", b"ORM^O01"), ("AR", "200", "MSH^1^9")),
        (adt("A01", pid), ("AR", "201", "MSH^1^9^1^2")),
        (adt("A31", pid, facility="NOBODY"), ("AR", "103", "MSH^1^4")),
        (latin1_as_utf8, ("AR", "103", "MSH^1^18")),
        (adt("A31", pid).replace(f"|{pid}^^^ADT1|".encode(), b"||"), ("AE", "101", "PID^1^3")),
        (adt("A40", pid), ("AE", "101", "MRG^1^1")),
        (adt("A31", pid, control_id=" "), ("AE", "101", "MSH^1^10")),
        (adt("A31", pid, authority="UNKNOWN_NS"), ("AR", "103", "PID^1^3^1^4")),
        (adt("A31", pid, authority="&1.2.3.4&ISO"), ("AR", "204", "PID^1^3^1^4")),
        # Issue 15: an OID of another type, or without one, is never moved to the default issuer
        (adt("A31", pid, authority="&1.2.246.21&L"), ("AR", "103", "PID^1^3^1^4")),
        (adt("A31", pid, authority="&1.2.246.21"), ("AR", "103", "PID^1^3^1^4")),
        # ... values that could not be kept, and malformed escapes, are refused before any AA
        (adt("A31", "9" * 100_000), ("AR", "102", "PID^1^3^1^1")),
        (adt("A31", pid, name="Doe\\XZZ\\^John"), ("AR", "102", "PID^1^5^1")),
        (adt("A31", pid, name="Doe\\XD800\\^John"), ("AR", "102", "PID^1^5^1")),
        # ... corrupt MSH-1/MSH-2 get an AR in the standard delimiters
        (adt("A31", pid).replace(b"MSH|^~\\&|", b"MSH|^~|&|"), ("AR", "100", "MSH^1^2")),
        # ... and blank segments are dropped, not an internal error
        (
            adt("A31", pid, control_id=f"B{pid}").replace(b"\rEVN|", b"\r\r\rEVN|") + b"\r\r",
            ("AA", None, None),
        ),
        (adt("A31", pid, control_id=f"OK{pid}"), ("AA", None, None)),
    ]
    # When they are sent one after the other on one connection
    acks = exchange(cloud.hl7_port, [frame(m) for m, _ in cases], expect=len(cases))
    # Then each gets its ACK code, HL7 error code (table 0357) and error location, and the
    # connection survives them all (the last, valid one is accepted)
    assert [(a.code, a.error, a.location) for a in acks] == [want for _, want in cases], [
        a.text for a in acks
    ]
    # And the ACK to corrupt delimiters is in the standard ones
    assert acks[-3].text.startswith("MSH|^~\\&|"), acks[-3].text
    # And the ACK answers the message: MSA-2 echoes MSH-10, MSH-5/6 are the sender's MSH-3/4
    assert acks[-1].control_id == f"OK{pid}"
    assert acks[-1].text.split("|")[4:6] == ["TEST_PAS", "XYZ_RADIOLOGY"]


def test_an_oversized_message_is_rejected_and_the_connection_closed(
    cloud: LocalCloud, strict_port: int
) -> None:
    # Given a message larger than the listener's limit
    big = adt("A31", fresh_id(), control_id="BIG").replace(b"\rEVN|", b"\rNTE|||" + b"x" * LIMIT + b"\rEVN|")
    with connect(strict_port) as sock:
        # When it is sent
        sock.sendall(frame(big))
        frames = read_frames(sock, 2)
        # Then one AR (application error) answers it, and the listener closes the connection
        assert len(frames) == 1
        ack = Ack.parse(frames[0].decode("latin-1"))
        assert (ack.code, ack.error, ack.control_id) == ("AR", "207", "BIG")
        assert sock.recv(1) == b""
    # And a message within the limit is accepted on a new connection
    pid = fresh_id()
    assert [a.code for a in exchange(strict_port, frame(adt("A31", pid)), expect=1)] == ["AA"]


@pytest.mark.parametrize("sent", [b"", b"\x0bMSH|^~\\&|half a message"], ids=["silent", "half-frame"])
def test_idle_connections_are_closed(strict_port: int, sent: bytes) -> None:
    # Given a connection that sends nothing more (after, perhaps, half a frame)
    with connect(strict_port) as sock:
        sock.sendall(sent)
        # When the idle timeout passes, then the listener closes it (recv returns end of stream)
        sock.settimeout(30)
        # (closed with data unread, the close may arrive as a reset: that is a close too)
        with contextlib.suppress(ConnectionResetError):
            assert sock.recv(1024) == b""


def test_no_aa_unless_the_message_is_queued(cloud: LocalCloud) -> None:
    # Given a listener whose queue does not exist (SQS refuses every message)
    assert cloud.settings is not None
    missing = cloud.queues["patient-updates"].url.replace("patient-updates", "no-such-queue")
    pid = fresh_id()
    with separate_listener(cloud, PATIENT_UPDATE_QUEUE_URL=missing) as port:
        # When a valid message arrives
        [ack] = exchange(port, frame(adt("A31", pid, control_id=f"Q{pid}")), expect=1)
    # Then it is not acknowledged as accepted (AE 207: the sender keeps it and retries)
    assert (ack.code, ack.error) == ("AE", "207"), ack.text
    # And nothing reached the index
    assert PatientRepository(cloud.settings).get(PatientIdentity(pid, TEMP_ISSUER).key) is None
