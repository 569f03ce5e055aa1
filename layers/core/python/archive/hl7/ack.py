"""Original-mode acknowledgements: MSH + MSA (+ ERR in the HL7 2.5 layout).

ERR (2.5): ERR-1 empty (deprecated), ERR-2 error location ``SEG^seq^field^rep^comp``, ERR-3 HL7
error code ``code^text^HL70357``, ERR-4 severity ``E``, ERR-7 diagnostic information (free text).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from archive.hl7.message import CHARACTER_SETS, MessageHeader

DEFAULT_ENCODING = "^~\\&"


class AckCode(StrEnum):
    ACCEPT = "AA"
    ERROR = "AE"
    REJECT = "AR"


class ErrorCode(StrEnum):
    """HL7 table 0357 (message error condition codes) as the archive uses them."""

    SEGMENT_SEQUENCE = "100"
    REQUIRED_FIELD_MISSING = "101"
    DATA_TYPE_ERROR = "102"
    TABLE_VALUE_NOT_FOUND = "103"
    UNSUPPORTED_MESSAGE_TYPE = "200"
    UNSUPPORTED_EVENT = "201"
    UNKNOWN_KEY = "204"
    DUPLICATE_KEY = "205"
    APPLICATION_ERROR = "207"


ERROR_TEXT = {
    ErrorCode.SEGMENT_SEQUENCE: "Segment sequence error",
    ErrorCode.REQUIRED_FIELD_MISSING: "Required field missing",
    ErrorCode.DATA_TYPE_ERROR: "Data type error",
    ErrorCode.TABLE_VALUE_NOT_FOUND: "Table value not found",
    ErrorCode.UNSUPPORTED_MESSAGE_TYPE: "Unsupported message type",
    ErrorCode.UNSUPPORTED_EVENT: "Unsupported event code",
    ErrorCode.UNKNOWN_KEY: "Unknown key identifier",
    ErrorCode.DUPLICATE_KEY: "Duplicate key identifier",
    ErrorCode.APPLICATION_ERROR: "Application internal error",
}


@dataclass(frozen=True)
class AckError:
    code: ErrorCode
    diagnostic: str
    location: str | None = None


def escape(value: str, separator: str = "|", encoding: str = DEFAULT_ENCODING) -> str:
    """HL7 escaping of free text for one field (delimiters become \\F\\ \\S\\ \\R\\ \\E\\ \\T\\)."""
    component, repetition, esc, subcomponent = encoding[0], encoding[1], encoding[2], encoding[3]
    out = []
    for ch in value:
        if ch == esc:
            out.append(f"{esc}E{esc}")
        elif ch == separator:
            out.append(f"{esc}F{esc}")
        elif ch == component:
            out.append(f"{esc}S{esc}")
        elif ch == repetition:
            out.append(f"{esc}R{esc}")
        elif ch == subcomponent:
            out.append(f"{esc}T{esc}")
        elif ch in "\r\n":
            out.append(" ")
        else:
            out.append(ch)
    return "".join(out)


def build_ack(
    header: MessageHeader | None,
    code: AckCode,
    error: AckError | None = None,
    *,
    now: datetime | None = None,
    control_id: str | None = None,
) -> str:
    """The ACK for ``header`` (None when the message had no readable MSH) as HL7 text."""
    sep = header.field_separator if header else "|"
    enc = header.encoding_characters if header else DEFAULT_ENCODING
    component = enc[0]
    timestamp = (now or datetime.now(UTC)).strftime("%Y%m%d%H%M%S")
    trigger = header.trigger_event if header else ""
    msh = [
        "MSH",
        enc,
        header.receiving_application if header else "",
        header.receiving_facility if header else "",
        header.sending_application.encode(component) if header else "",
        header.sending_facility.encode(component) if header else "",
        timestamp,
        "",
        component.join(("ACK", trigger, "ACK")),
        control_id or uuid.uuid4().hex[:20],
        (header.processing_id if header else "") or "P",
        (header.version if header else "") or "2.5",
        "",
        "",
        "",
        "",
        "",
        header.character_set if header else "",
    ]
    segments = [sep.join(msh).rstrip(sep)]
    msa = ["MSA", code.value, escape(header.control_id, sep, enc) if header else ""]
    segments.append(sep.join(msa))
    if error is not None:
        err = [
            "ERR",
            "",
            error.location or "",
            component.join((error.code.value, ERROR_TEXT[error.code], "HL70357")),
            "E",
            "",
            "",
            escape(error.diagnostic[:250], sep, enc),
        ]
        segments.append(sep.join(err))
    return "\r".join(segments) + "\r"


def encode_ack(text: str, header: MessageHeader | None) -> bytes:
    """The ACK's bytes, in the character set of the message it answers."""
    codec = CHARACTER_SETS.get(header.character_set if header else "", ("ascii", None))[0]
    return text.encode(codec, "replace")
