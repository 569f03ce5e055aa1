"""The MLLP listener (asyncio): frames in, original-mode ACKs out, one connection at a time each.

Runs on Fargate behind an NLB (which terminates TLS) and, unchanged, in the local cloud. Messages
on one connection are answered in order. An AA is sent only after ``AdtIntake.accept`` returned,
that is after SQS has the message; every expected failure is mapped by exception type to an ACK
code and an HL7 error code (table 0357), anything else is AE 207 (the sender may retry).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass

from archive.errors import (
    ArchiveError,
    DuplicatePatient,
    InvalidFieldValue,
    InvalidMerge,
    MalformedMessage,
    MessageTooLarge,
    MessageTooLargeToKeep,
    NotAuthenticated,
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
from archive.hl7.ack import AckCode, AckError, ErrorCode, build_ack, encode_ack
from archive.hl7.message import MessageHeader, parse_header
from archive.hl7.mllp import Frame, FrameDecoder, OversizedFrame, encode_frame
from archive.services.patient_intake import AdtIntake

from .secure import MllpTls

LOG = logging.getLogger("archive.hl7")

ACK_BY_ERROR: tuple[tuple[type[ArchiveError], AckCode, ErrorCode], ...] = (
    (MessageTooLarge, AckCode.REJECT, ErrorCode.APPLICATION_ERROR),
    (NotAuthenticated, AckCode.REJECT, ErrorCode.APPLICATION_ERROR),
    (MalformedMessage, AckCode.REJECT, ErrorCode.SEGMENT_SEQUENCE),
    (UnsupportedMessageType, AckCode.REJECT, ErrorCode.UNSUPPORTED_MESSAGE_TYPE),
    (UnsupportedTriggerEvent, AckCode.REJECT, ErrorCode.UNSUPPORTED_EVENT),
    (UnsupportedCharacterSet, AckCode.REJECT, ErrorCode.TABLE_VALUE_NOT_FOUND),
    (UnknownSendingFacility, AckCode.REJECT, ErrorCode.TABLE_VALUE_NOT_FOUND),
    (RequiredFieldMissing, AckCode.ERROR, ErrorCode.REQUIRED_FIELD_MISSING),
    (InvalidFieldValue, AckCode.REJECT, ErrorCode.DATA_TYPE_ERROR),
    (MessageTooLargeToKeep, AckCode.REJECT, ErrorCode.APPLICATION_ERROR),
    (UnknownAssigningAuthority, AckCode.REJECT, ErrorCode.TABLE_VALUE_NOT_FOUND),
    (UntrustedAssigningAuthority, AckCode.REJECT, ErrorCode.UNKNOWN_KEY),
    (NotControlledBySender, AckCode.ERROR, ErrorCode.UNKNOWN_KEY),
    (PatientMerged, AckCode.ERROR, ErrorCode.UNKNOWN_KEY),
    (DuplicatePatient, AckCode.ERROR, ErrorCode.DUPLICATE_KEY),
    (InvalidMerge, AckCode.ERROR, ErrorCode.APPLICATION_ERROR),
    (QueueFailure, AckCode.ERROR, ErrorCode.APPLICATION_ERROR),
)
READ_CHUNK = 64 * 1024


def ack_for(exc: Exception) -> tuple[AckCode, AckError]:
    """The ACK code and ERR for an exception raised while accepting a message."""
    location = getattr(exc, "location", None)
    for error_type, ack_code, error_code in ACK_BY_ERROR:
        if isinstance(exc, error_type):
            return ack_code, AckError(error_code, str(exc), location)
    return AckCode.ERROR, AckError(ErrorCode.APPLICATION_ERROR, "internal error; please retry")


def peek_header(payload: bytes) -> MessageHeader | None:
    """MSH read leniently (latin-1 never fails), only to address the ACK."""
    try:
        return parse_header(payload.lstrip().decode("latin-1").replace("\n", "\r"))
    except MalformedMessage:
        return None


@dataclass(frozen=True)
class ListenerLimits:
    max_message_bytes: int = 1024 * 1024
    idle_timeout_seconds: float = 300.0
    # On SIGTERM, how long a message being handled may take to be answered before its connection is cut.
    stop_grace_seconds: float = 30.0


class MllpListener:
    def __init__(
        self,
        intake: AdtIntake,
        *,
        host: str,
        port: int | None,
        limits: ListenerLimits,
        tls: MllpTls | None = None,
    ) -> None:
        self._intake = intake
        self._host = host
        self._port = port
        self._limits = limits
        # MLLP over TLS on its own port (docs/security.md); None: plain only.
        self._tls = tls
        self._server: asyncio.Server | None = None
        self._tls_server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        # Connections in the middle of a message: on stop they may finish it and send its ACK.
        self._busy: set[asyncio.Task[None]] = set()
        self._stopping = False

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def tls_port(self) -> int:
        assert self._tls_server is not None
        return int(self._tls_server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        if self._port is not None:
            self._server = await asyncio.start_server(self._serve, self._host, self._port, reuse_address=True)
            LOG.info("HL7 MLLP listener on %s:%d", self._host, self.port)
        if self._tls is not None:
            self._tls_server = await self._tls.start_server(self._host, self._serve)
            LOG.info("HL7 MLLP/TLS listener on %s:%d", self._host, self.tls_port)

    async def stop(self) -> None:
        """Stop accepting; answer the messages being handled (within the grace time); close."""
        self._stopping = True
        for server in (self._server, self._tls_server):
            if server is not None:
                server.close()
        for task in self._connections - self._busy:
            task.cancel()
        if self._busy:
            await asyncio.wait(set(self._busy), timeout=self._limits.stop_grace_seconds)
        for task in list(self._connections):
            task.cancel()
        for task in list(self._connections):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for server in (self._server, self._tls_server):
            if server is not None:
                await server.wait_closed()

    async def _serve(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        authorise: Callable[[str, str], None] | None = None,
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        peer = writer.get_extra_info("peername")
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        decoder = FrameDecoder(self._limits.max_message_bytes)
        try:
            while True:
                try:
                    data = await asyncio.wait_for(reader.read(READ_CHUNK), self._limits.idle_timeout_seconds)
                except TimeoutError:
                    LOG.info("closing idle connection from %s", peer)
                    return
                if not data:
                    return
                for event in decoder.feed(data):
                    if isinstance(event, OversizedFrame):
                        header = peek_header(event.head)
                        error = MessageTooLarge(
                            f"the message exceeds {self._limits.max_message_bytes} bytes; closing the connection"
                        )
                        code, err = ack_for(error)
                        LOG.warning("oversized message from %s; closing", peer)
                        writer.write(encode_frame(encode_ack(build_ack(header, code, err), header)))
                        await writer.drain()
                        return
                    assert isinstance(event, Frame)
                    self._busy.add(task)
                    try:
                        answer, refused = await self._answer(event.payload, peer, authorise)
                        writer.write(encode_frame(answer))
                        await writer.drain()
                    finally:
                        self._busy.discard(task)
                    if refused:
                        return  # the certificate does not identify the sender: no further messages
                if self._stopping:
                    return
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            LOG.info("connection from %s lost: %s", peer, exc)
        finally:
            if decoder.garbage_bytes:
                LOG.warning("dropped %d bytes outside MLLP frames from %s", decoder.garbage_bytes, peer)
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer(
        self, payload: bytes, peer: object, authorise: Callable[[str, str], None] | None = None
    ) -> tuple[bytes, bool]:
        """The ACK, and whether the connection must be closed after it (not authenticated)."""
        header = peek_header(payload)
        try:
            request = await asyncio.to_thread(self._intake.accept, payload, authorise)
        except Exception as exc:
            code, error = ack_for(exc)
            if isinstance(exc, ArchiveError):
                LOG.info("%s %s from %s: %s %s", code, error.code, peer, type(exc).__name__, exc)
            else:
                LOG.exception("unexpected failure on a message from %s", peer)
            return encode_ack(build_ack(header, code, error), header), isinstance(exc, NotAuthenticated)
        LOG.info("queued %s %s from %s (%s)", request.event, request.message_control_id, request.sender, peer)
        return encode_ack(build_ack(header, AckCode.ACCEPT), header), False
