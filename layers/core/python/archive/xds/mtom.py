"""MTOM/XOP (multipart/related) messages: a streaming writer for retrieve answers and a streaming
reader for requests.

The writer is a generator: it yields the SOAP envelope part, then each attachment in blocks read
from a file-like source that is opened only when its turn comes and closed right after, so a
response of any size passes through with memory bounded by the block size (a RAD-69 answer for a
1 GB study never exists as a whole). The reader consumes a request stream block by block: the root
(XML) part is kept in memory up to the XML size limit, other parts spill to temporary files, and
every limit is enforced before more is read.
"""

from __future__ import annotations

import email.message
import io
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, BinaryIO
from urllib.parse import unquote

from lxml import etree

from archive.errors import MalformedXml, XmlTooLarge
from archive.xds.xml import DEFAULT_LIMITS, XmlLimits, parse_xml

CRLF = b"\r\n"
BLOCK = 256 * 1024


@dataclass(frozen=True)
class Attachment:
    """One binary part: its Content-ID (without angle brackets) and how to open its bytes."""

    content_id: str
    open: Callable[[], BinaryIO]
    content_type: str = "application/dicom"


def new_content_id(index: int) -> str:
    return f"{index}.{uuid.uuid4().hex}@xds.archive"


@dataclass(frozen=True)
class MtomResponse:
    """An MTOM message ready to send: the HTTP Content-Type and the body as a stream of blocks."""

    content_type: str
    body: Iterator[bytes]


def write_mtom(
    envelope: bytes,
    attachments: Iterable[Attachment],
    *,
    action: str | None = None,
    boundary: str | None = None,
    block_size: int = BLOCK,
) -> MtomResponse:
    """Stream ``envelope`` as the root part of an MTOM message followed by ``attachments``."""
    boundary = boundary or f"MIMEBoundary_{uuid.uuid4().hex}"
    root_id = f"root.{uuid.uuid4().hex}@xds.archive"
    content_type = (
        f'multipart/related; type="application/xop+xml"; boundary="{boundary}"; '
        f'start="<{root_id}>"; start-info="application/soap+xml"'
    )
    if action:
        content_type += f'; action="{action}"'
    return MtomResponse(content_type, _parts(envelope, attachments, boundary, root_id, block_size))


def _headers(boundary: str, content_type: str, content_id: str) -> bytes:
    return (
        f"--{boundary}\r\nContent-Type: {content_type}\r\n"
        f"Content-Transfer-Encoding: binary\r\nContent-ID: <{content_id}>\r\n\r\n"
    ).encode("ascii")


def _parts(
    envelope: bytes, attachments: Iterable[Attachment], boundary: str, root_id: str, block_size: int
) -> Iterator[bytes]:
    yield _headers(boundary, 'application/xop+xml; charset=UTF-8; type="application/soap+xml"', root_id)
    yield envelope
    yield CRLF
    for attachment in attachments:
        yield _headers(boundary, attachment.content_type, attachment.content_id)
        source = attachment.open()
        try:
            while block := source.read(block_size):
                yield block
        finally:
            source.close()
        yield CRLF
    yield f"--{boundary}--\r\n".encode("ascii")


# --- reading ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class MtomLimits:
    """Limits of one incoming message: the XML root part, each other part, all parts together."""

    xml: XmlLimits = DEFAULT_LIMITS
    max_part_bytes: int = 64 * 1024 * 1024
    max_total_bytes: int = 256 * 1024 * 1024
    max_parts: int = 1000
    max_header_bytes: int = 16 * 1024


@dataclass
class MtomMessage:
    """A received MTOM request: the parsed root element and the other parts by Content-ID."""

    root: etree._Element
    attachments: dict[str, IO[bytes]] = field(default_factory=dict)

    def attachment(self, include: etree._Element) -> IO[bytes]:
        """The part an xop:Include names (``href="cid:..."``), rewound."""
        href = include.get("href") or ""
        key = unquote(href[4:]) if href.startswith("cid:") else href
        if key not in self.attachments:
            raise MalformedXml(f"xop:Include names no part: {href!r}")
        part = self.attachments[key]
        part.seek(0)
        return part

    def close(self) -> None:
        for part in self.attachments.values():
            part.close()


def _param(content_type: str, name: str) -> str | None:
    header = email.message.Message()
    header["content-type"] = content_type
    value = header.get_param(name)
    return value if isinstance(value, str) else None


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def read_message(stream: BinaryIO, content_type: str, limits: MtomLimits | None = None) -> MtomMessage:
    """Read a SOAP request from an HTTP body: plain ``application/soap+xml`` or MTOM multipart/related."""
    limits = limits or MtomLimits()
    if _media_type(content_type) != "multipart/related":
        return MtomMessage(parse_xml(stream, limits.xml))
    boundary = _param(content_type, "boundary")
    if not boundary:
        raise MalformedXml("multipart/related without boundary")
    start = (_param(content_type, "start") or "").strip().strip("<>") or None
    parts: dict[str, IO[bytes]] = {}
    try:
        _read_parts(stream, boundary.encode("ascii", "replace"), limits, start, parts)
    except BaseException:
        for part in parts.values():  # leave nothing behind
            part.close()
        raise
    root_key = start if start in parts else next(iter(parts), None)
    if root_key is None:
        raise MalformedXml("multipart/related without parts")
    root_part = parts.pop(root_key)
    root_part.seek(0)
    try:
        root = parse_xml(root_part, limits.xml)  # type: ignore[arg-type]
    finally:
        root_part.close()
    return MtomMessage(root, parts)


def _read_parts(
    stream: BinaryIO, boundary: bytes, limits: MtomLimits, start: str | None, parts: dict[str, IO[bytes]]
) -> None:
    delimiter = CRLF + b"--" + boundary
    buffer = CRLF  # so that a boundary on the very first line matches the delimiter too
    total = 0
    eof = False

    def fill() -> bool:
        nonlocal buffer, total, eof
        if eof:
            return False
        block = stream.read(BLOCK)
        if not block:
            eof = True
            return False
        total += len(block)
        if total > limits.max_total_bytes:
            raise XmlTooLarge(f"message larger than {limits.max_total_bytes} bytes")
        buffer += block
        return True

    # Preamble: skip to the first delimiter.
    while (at := buffer.find(delimiter)) < 0:
        buffer = buffer[-len(delimiter) :]
        if not fill():
            raise MalformedXml("multipart body without its boundary")
    buffer = buffer[at + len(delimiter) :]
    index = 0
    while True:
        while len(buffer) < 2 and fill():
            pass
        if buffer.startswith(b"--"):  # close delimiter: hand the parts over rewound
            for part in parts.values():
                part.seek(0)
            return
        # Headers end at the first empty line (after the rest of the delimiter line).
        while (end := buffer.find(CRLF + CRLF)) < 0:
            if len(buffer) > limits.max_header_bytes:
                raise MalformedXml("part headers too long")
            if not fill():
                raise MalformedXml("truncated part headers")
        header_text = buffer[:end].decode("latin-1").split("\r\n", 1)
        buffer = buffer[end + 4 :]
        headers = email.message.Message()
        for line in (header_text[1] if len(header_text) > 1 else "").split("\r\n"):
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip()] = value.strip()
        encoding = (headers.get("Content-Transfer-Encoding") or "binary").strip().lower()
        if encoding not in {"binary", "8bit", "7bit"}:
            raise MalformedXml(f"Content-Transfer-Encoding {encoding} is not accepted in MTOM")
        content_id = (headers.get("Content-ID") or "").strip().strip("<>") or f"part-{index}"
        is_root = content_id == start or (start is None and index == 0)
        limit = limits.xml.max_bytes if is_root else limits.max_part_bytes
        # Not a context manager: the part outlives this function (the caller closes it).
        sink: IO[bytes] = io.BytesIO() if is_root else tempfile.SpooledTemporaryFile(max_size=1024 * 1024)  # noqa: SIM115
        parts[content_id] = sink
        written = 0
        while True:
            at = buffer.find(delimiter)
            if at >= 0:
                chunk, buffer = buffer[:at], buffer[at + len(delimiter) :]
            else:
                keep = len(delimiter) - 1
                chunk, buffer = buffer[: max(0, len(buffer) - keep)], buffer[max(0, len(buffer) - keep) :]
            written += len(chunk)
            if written > limit:
                raise XmlTooLarge(f"part {content_id} larger than {limit} bytes")
            sink.write(chunk)
            if at >= 0:
                break
            if not fill():
                raise MalformedXml("multipart body ends inside a part")
        index += 1
        if index > limits.max_parts:
            raise MalformedXml(f"more than {limits.max_parts} parts")
