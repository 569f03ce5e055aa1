"""IHE ITI-20 Record Audit Event transport: RFC 5424 syslog messages, RFC 5425 TLS framing.

One audit message is one syslog message: PRI 85 (facility authpriv 10, severity notice 5) for
successes, 84 (warning) for failures; MSGID ``IHE+RFC-3881``; no structured data; the MSG is the
UTF-8 XML, preceded by the byte order mark RFC 5424 asks for. On TLS each message is framed by
octet counting (RFC 5425 4.3): ``<length> SP <message>``.
"""

from __future__ import annotations

from datetime import UTC, datetime

FACILITY_AUTHPRIV = 10
SEVERITY_NOTICE = 5
SEVERITY_WARNING = 4
MSGID = "IHE+RFC-3881"
BOM = b"\xef\xbb\xbf"
NILVALUE = "-"


def _field(value: str | None, limit: int) -> str:
    text = "".join(c for c in (value or "") if 33 <= ord(c) <= 126)[:limit]
    return text or NILVALUE


def syslog_message(
    xml: bytes,
    *,
    hostname: str,
    app_name: str,
    proc_id: str | None = None,
    failure: bool = False,
    at: datetime | None = None,
) -> bytes:
    """An RFC 5424 message carrying one audit message."""
    severity = SEVERITY_WARNING if failure else SEVERITY_NOTICE
    pri = FACILITY_AUTHPRIV * 8 + severity
    stamp = (
        (at or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )
    header = (
        f"<{pri}>1 {stamp} {_field(hostname, 255)} {_field(app_name, 48)} "
        f"{_field(proc_id, 128)} {MSGID} {NILVALUE} "
    )
    return header.encode("ascii") + BOM + xml


def frame(message: bytes) -> bytes:
    """RFC 5425 octet-counting frame."""
    return str(len(message)).encode("ascii") + b" " + message


class FrameReader:
    """Splits a TLS byte stream into RFC 5425 frames (for receivers, and the tests' receiver)."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        out: list[bytes] = []
        while True:
            space = self._buffer.find(b" ")
            if space <= 0:
                return out
            length = int(self._buffer[:space])
            end = space + 1 + length
            if len(self._buffer) < end:
                return out
            out.append(self._buffer[space + 1 : end])
            self._buffer = self._buffer[end:]
