"""Original-mode ACKs (MSH, MSA, ERR in the 2.5 layout) and the exception -> ACK code mapping."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from archive.errors import (
    ArchiveError,
    DuplicatePatient,
    InvalidFieldValue,
    InvalidMerge,
    MalformedMessage,
    MessageTooLarge,
    MessageTooLargeToKeep,
    NotControlledBySender,
    PatientMerged,
    QueueFailure,
    RequiredFieldMissing,
    UnknownAssigningAuthority,
    UnknownSendingFacility,
    UnsupportedCharacterSet,
    UnsupportedMessageType,
    UnsupportedTriggerEvent,
    UntrustedAssigningAuthority,
)
from archive.hl7.ack import AckCode, AckError, ErrorCode, build_ack, encode_ack, escape
from archive.hl7.message import parse_header

from listeners.hl7.server import ack_for, peek_header

MSG = "MSH|^~\\&|PAS|HOSP|ARCHIVE|NAT|20260101||ADT^A40^ADT_A39|MSG001|P|2.5.1||||||8859/1\rPID|||1\r"
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def segments(text: str) -> dict[str, list[str]]:
    assert text.endswith("\r")
    return {s[:3]: s.split("|") for s in text.split("\r") if s}


def test_an_accept_ack_answers_the_message() -> None:
    ack = segments(build_ack(parse_header(MSG), AckCode.ACCEPT, now=NOW, control_id="ACK1"))
    assert ack["MSH"][2:6] == ["ARCHIVE", "NAT", "PAS", "HOSP"]
    assert ack["MSH"][6] == "20260102030405"
    assert ack["MSH"][8:12] == ["ACK^A40^ACK", "ACK1", "P", "2.5.1"]
    assert ack["MSH"][17] == "8859/1"
    assert ack["MSA"] == ["MSA", "AA", "MSG001"]
    assert "ERR" not in ack


def test_an_error_ack_has_err_in_the_25_layout() -> None:
    error = AckError(ErrorCode.UNKNOWN_KEY, "patient T1^^^1.2 was merged | into T2", "PID^1^3^1")
    ack = segments(build_ack(parse_header(MSG), AckCode.ERROR, error, now=NOW))
    assert ack["MSA"][1:3] == ["AE", "MSG001"]
    err = ack["ERR"]
    assert err[1] == ""  # ERR-1 is deprecated in 2.5
    assert err[2] == "PID^1^3^1"  # ERR-2 error location
    assert err[3] == "204^Unknown key identifier^HL70357"  # ERR-3 HL7 error code
    assert err[4] == "E"  # ERR-4 severity
    assert err[7] == "patient T1\\S\\\\S\\\\S\\1.2 was merged \\F\\ into T2"  # ERR-7, escaped


def test_an_ack_for_an_unreadable_message_still_has_msh_and_msa() -> None:
    ack = segments(build_ack(None, AckCode.REJECT, AckError(ErrorCode.SEGMENT_SEQUENCE, "no MSH")))
    assert ack["MSA"] == ["MSA", "AR", ""]
    assert ack["ERR"][3].startswith("100^")


def test_escape_handles_every_delimiter() -> None:
    assert escape("a|b^c~d\\e&f\rg") == "a\\F\\b\\S\\c\\R\\d\\E\\e\\T\\f g"


def test_the_ack_is_encoded_in_the_message_character_set() -> None:
    header = parse_header(MSG)
    text = build_ack(header, AckCode.ERROR, AckError(ErrorCode.APPLICATION_ERROR, "Äärelä"))
    assert "Äärelä".encode("latin-1") in encode_ack(text, header)


def test_peek_header_reads_any_bytes_leniently() -> None:
    header = peek_header("MSH|^~\\&|PAS|HOSP|||||ADT^A08|X1|P|2.5||||||UNICODE UTF-8\rPID|||Ä\r".encode())
    assert header is not None and header.control_id == "X1"
    assert peek_header(b"\xff\xfe garbage") is None


@pytest.mark.parametrize(
    ("error", "ack", "code"),
    [
        (MessageTooLarge("x"), "AR", "207"),
        (MalformedMessage("x"), "AR", "100"),
        (UnsupportedMessageType("x"), "AR", "200"),
        (UnsupportedTriggerEvent("x"), "AR", "201"),
        (UnsupportedCharacterSet("x"), "AR", "103"),
        (UnknownSendingFacility("x"), "AR", "103"),
        (RequiredFieldMissing("x", location="PID^1^3"), "AE", "101"),
        (UnknownAssigningAuthority("x"), "AR", "103"),
        (UntrustedAssigningAuthority("x"), "AR", "204"),
        (InvalidFieldValue("x"), "AR", "102"),
        (MessageTooLargeToKeep("x"), "AR", "207"),
        (NotControlledBySender("x"), "AE", "204"),
        (PatientMerged("x"), "AE", "204"),
        (DuplicatePatient("x"), "AE", "205"),
        (InvalidMerge("x"), "AE", "207"),
        (QueueFailure("x"), "AE", "207"),
        (ArchiveError("x"), "AE", "207"),
        (RuntimeError("boom"), "AE", "207"),
    ],
)
def test_exception_types_map_to_ack_and_error_codes(error: Exception, ack: str, code: str) -> None:
    ack_code, err = ack_for(error)
    assert (ack_code.value, err.code.value) == (ack, code)


def test_the_location_travels_with_the_exception() -> None:
    assert ack_for(RequiredFieldMissing("x", location="MRG^1^1"))[1].location == "MRG^1^1"


def test_unexpected_errors_do_not_leak_their_text() -> None:
    assert "secret" not in ack_for(RuntimeError("secret table name"))[1].diagnostic


@pytest.mark.parametrize(
    "payload",
    [
        b"MSH^^~\\&^PAS^HOSP^A^B^2026^^ADT^A08^1\r",
        b"MSH|^~\\|PAS|HOSP|A|B|2026||ADT^A08|1\r",
        b"MSH\r|^~\\&|PAS|HOSP\r",
        b"MSH|^~ &|PAS|HOSP|A|B|2026||ADT^A08|1\r",
        b"MSH\x00^~\\&\x00PAS\r",
    ],
    ids=[
        "MSH-1 repeated in MSH-2",
        "MSH-2 three characters",
        "CR as MSH-1",
        "space in MSH-2",
        "NUL as MSH-1",
    ],
)
def test_an_ack_to_corrupt_delimiters_uses_the_standard_ones(payload: bytes) -> None:
    """Issue 15 finding 8."""
    header = peek_header(payload)
    assert header is None
    code, err = ack_for(MalformedMessage("MSH-1/MSH-2 encoding characters are invalid", location="MSH^1^2"))
    text = encode_ack(build_ack(header, code, err), header).decode("ascii")
    assert text.startswith("MSH|^~\\&|")
    assert segments(text)["MSA"][1] == "AR"
    assert segments(text)["ERR"][3] == "100^Segment sequence error^HL70357"
