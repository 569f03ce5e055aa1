"""What the listener adds to each pynetdicom association: bounded memory and a race-free sender.

pynetdicom 3.0 leaves four things to the application, each fixed here per association object:

1. **Receive bound.** The listener announces a maximum PDU length, but pynetdicom reads whatever
   length a PDU header claims into memory. A PDU longer than announced is a protocol violation;
   reading it is refused (the connection is closed, as on any transport error).
2. **Send window.** ``send_c_store`` of a file reads it in PDU-sized pieces and queues every piece
   for the association's network thread without limit: a 2 GB object read from a local disk faster
   than the receiver takes it would end up in memory. Queueing waits while ``SEND_WINDOW_BYTES``
   worth of PDUs are still unsent. A peer announcing no maximum PDU length (0) would get one PDU
   per object; the archive sends it PDUs of at most ``MAX_PDU_BYTES`` (always allowed).
3. **Stolen responses** (the C-MOVE stall). A requestor association's reactor thread polls the
   DIMSE queue while the sending thread waits for a C-STORE response. pynetdicom pauses the reactor
   with a flag handshake that has a window: the reactor can pass its checkpoint just before the
   sender clears it, the sender sees the reactor "paused", sends, and the reactor then takes the
   response off the queue and drops it ("Received unexpected C-STORE service message"). The sender
   waits out the DIMSE timeout (120 s), aborts, and every remaining sub-operation fails: one in a
   few hundred to a few thousand C-STOREs here. The guard below keeps the reactor from taking any
   message while a request is outstanding (a lock makes check and take one step).
4. **Sending encoded objects from C-MOVE/C-GET.** pynetdicom streams a C-STORE from a file only
   when given a path, and encodes a Dataset element by element; its C-MOVE/C-GET service passes the
   handler's datasets on as they are. Sub-operations arrive as ``SpooledSubOperation`` (a Dataset
   naming its spool file, or carrying the dataset already encoded in the accepted syntax) and are
   sent from the file or from those bytes as they are: nothing is decoded or encoded again.
   Sending bytes repeats the last steps of pynetdicom 3.0's ``send_c_store`` (context lookup,
   reactor pause, request, response), which offers no public way to hand it encoded data; the
   message itself is encoded and fragmented once, into one write (``wire.py``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import _config
from pynetdicom.dimse_primitives import C_GET, C_MOVE
from pynetdicom.pdu_primitives import P_DATA, MaximumLengthNotification

from .wire import EncodedMessage, install, p_data_pdus, store_request_command

# Largest PDU the listener accepts (announced in A-ASSOCIATE as Maximum Length). 0 would mean
# unlimited; 1 MiB keeps the number of PDUs per large object low while bounding what one read holds.
MAX_PDU_BYTES = 1024 * 1024
# A-ASSOCIATE-RQ/AC PDUs are not bound by the negotiated maximum; 128 presentation contexts with
# long UIDs and user identity stay far below this.
MAX_ASSOCIATE_PDU_BYTES = 256 * 1024
PDU_HEADER_BYTES = 6
SEND_WINDOW_BYTES = 8 * 1024 * 1024
# A sub-operation the archive itself fails (no syntax it can send, unreadable object):
# 0xC000 (Cannot understand) is counted as failed by pynetdicom's C-MOVE/C-GET service.
STATUS_NOT_SENT = 0xC000
PENDING = 0xFF00
# C-GET/C-MOVE Pending responses: at most one per this many seconds (PendingResponses).
PENDING_RESPONSE_SECONDS = 1.0

# pynetdicom streams C-STORE datasets given as paths from the file instead of loading them.
_config.STORE_SEND_CHUNKED_DATASET = True
# Encoded sub-operations go out as one write per message (wire.py).
install()


class PduTooLarge(OSError):
    """A peer sent a PDU longer than the listener announced (read refused, connection closed)."""


class SpooledSubOperation(Dataset):
    """A C-STORE sub-operation as the C-MOVE/C-GET handler yields it: the object to send is the
    Part-10 file at ``spool_path``, or ``encoded``, its dataset encoded in ``transfer_syntax``
    (neither: the archive fails this sub-operation itself)."""

    def __init__(
        self,
        sop_class_uid: str,
        sop_instance_uid: str,
        spool_path: Path | None,
        on_done: Callable[[], None] = lambda: None,
        *,
        encoded: bytes | None = None,
        transfer_syntax: str | None = None,
    ) -> None:
        super().__init__()
        self.SOPClassUID = sop_class_uid
        self.SOPInstanceUID = sop_instance_uid
        self.spool_path = spool_path
        self.on_done = on_done
        self.encoded = encoded
        self.transfer_syntax = transfer_syntax


def guard_connection(event: Any) -> None:
    """EVT_CONN_OPEN handler: receive bound and send window for this association."""
    assoc = event.assoc
    bound_received_pdus(assoc, MAX_PDU_BYTES)
    bound_send_queue(assoc, SEND_WINDOW_BYTES)


def bound_received_pdus(assoc: Any, max_pdu: int) -> None:
    sock = assoc.dul.socket
    if sock is None or getattr(sock, "_archive_bounded", False):
        return
    limit = max(max_pdu, MAX_ASSOCIATE_PDU_BYTES)
    original = sock.recv

    def recv(nr_bytes: int) -> bytearray:
        if nr_bytes > limit:
            raise PduTooLarge(f"peer PDU of {nr_bytes} bytes exceeds the maximum of {limit}")
        return original(nr_bytes)  # type: ignore[no-any-return]

    sock.recv = recv
    sock._archive_bounded = True


def bound_send_queue(assoc: Any, window_bytes: int) -> None:
    dul = assoc.dul
    if getattr(dul, "_archive_window", False):
        return
    original = dul.send_pdu
    queue = dul.to_provider_queue

    def send_pdu(primitive: Any) -> None:
        if isinstance(primitive, P_DATA):
            window = max(4, window_bytes // max(assoc.dimse.maximum_pdu_size or MAX_PDU_BYTES, 4096))
            # Queue.get() notifies not_full even for an unbounded queue: wait for the network thread.
            with queue.not_full:
                while queue._qsize() >= window and dul.is_alive() and not assoc.is_aborted:
                    queue.not_full.wait(0.5)
        original(primitive)

    dul.send_pdu = send_pdu
    dul._archive_window = True


def _cap_peer_pdu_length(assoc: Any, cap: int) -> None:
    """Send PDUs of at most ``cap`` bytes, also to a peer that announced no limit (0)."""
    peer = assoc.acceptor if assoc.is_requestor else assoc.requestor
    for item in peer.user_information:
        if isinstance(item, MaximumLengthNotification):
            announced = item.maximum_length_received or 0
            item.maximum_length_received = cap if announced == 0 else min(announced, cap)


def keep_alive(assoc: Any) -> None:
    """Count sending as activity on ``assoc``: pynetdicom's network timeout counts only received
    data, so a C-MOVE requester that waits quietly for a long retrieval (a large study, a 2 GB
    object) would otherwise be aborted right after its final response."""
    timer = getattr(assoc.dul, "_idle_timer", None)
    if timer is not None:
        timer.restart()


class StoreSender:
    """Makes ``assoc.send_c_store`` send SpooledSubOperations from their files, race-free."""

    def __init__(self, assoc: Any) -> None:
        self._assoc = assoc
        _cap_peer_pdu_length(assoc, MAX_PDU_BYTES)
        self._lock = threading.Lock()
        self._outstanding = False
        self._original_send = assoc.send_c_store
        self._original_get = assoc.dimse.get_msg
        assoc.dimse.get_msg = self._get_msg
        assoc.send_c_store = self.send_c_store

    def _get_msg(self, block: bool = False) -> Any:
        if block:
            return self._original_get(True)
        with self._lock:
            if self._outstanding:
                return None, None  # a response on its way belongs to the waiting sender
            return self._original_get(False)

    def send_c_store(self, dataset: Any, msg_id: int = 1, **kwargs: Any) -> Dataset:
        if not isinstance(dataset, SpooledSubOperation):
            return self._send(dataset, msg_id, kwargs)
        try:
            if dataset.encoded is not None:
                return self._send_encoded(dataset, msg_id, **kwargs)
            if dataset.spool_path is None:
                status = Dataset()
                status.Status = STATUS_NOT_SENT
                return status
            return self._send(str(dataset.spool_path), msg_id, kwargs)
        finally:
            dataset.encoded = None
            dataset.on_done()

    def _send_encoded(
        self,
        sub: SpooledSubOperation,
        msg_id: int,
        priority: int = 2,
        originator_aet: str | None = None,
        originator_id: int | None = None,
    ) -> Dataset:
        """``send_c_store`` of pynetdicom 3.0 from its context lookup on, with the data set given."""
        assoc = self._assoc
        if not assoc.is_established:
            raise RuntimeError("the association is not established")
        assert sub.encoded is not None and sub.transfer_syntax is not None
        context = assoc._get_valid_context(
            sub.SOPClassUID, sub.transfer_syntax, "scu", allow_conversion=False
        )
        command = store_request_command(
            message_id=msg_id,
            sop_class_uid=sub.SOPClassUID,
            sop_instance_uid=sub.SOPInstanceUID,
            priority=priority,
            originator_aet=originator_aet,
            originator_id=originator_id,
        )
        message = EncodedMessage(
            p_data_pdus(context.context_id, command, sub.encoded, assoc.dimse.maximum_pdu_size or 0)
        )
        with self._lock:
            self._outstanding = True
        try:
            assoc._reactor_checkpoint.clear()
            while not assoc._is_paused:
                time.sleep(0.0001)
            assoc.dul.send_pdu(message)
            _, rsp = assoc.dimse.get_msg(block=True)
            assoc._reactor_checkpoint.set()
        finally:
            with self._lock:
                self._outstanding = False
        if rsp is None:  # the DIMSE timeout expired: pynetdicom aborts
            assoc._handle_no_response()
            return Dataset()
        return assoc._check_received_status(rsp)  # type: ignore[no-any-return]

    def _send(self, dataset: Any, msg_id: int, kwargs: dict[str, Any]) -> Dataset:
        with self._lock:
            self._outstanding = True
        try:
            return self._original_send(dataset, msg_id=msg_id, **kwargs)  # type: ignore[no-any-return]
        finally:
            with self._lock:
                self._outstanding = False

    def detach(self) -> None:
        """Restore the association's own methods (C-GET: the requester's association lives on)."""
        self._assoc.send_c_store = self._original_send
        self._assoc.dimse.get_msg = self._original_get


class PendingResponses:
    """C-GET and C-MOVE Pending responses on ``assoc`` at most once per ``interval`` seconds.

    pynetdicom answers every sub-operation with a Pending response; PS3.4 makes them optional
    (C.4.2.3.1, C.4.3.3.1: the SCP "may optionally generate responses ... with status equal to
    Pending"). Encoding and sending one per instance cost about as much CPU as the C-STORE itself;
    one a second still shows the requester progress and keeps its association busy. The final
    response carries the counts and the Error Comment as before. ``close()`` restores the method.
    """

    def __init__(self, assoc: Any, interval: float = PENDING_RESPONSE_SECONDS) -> None:
        self._dimse = assoc.dimse
        self._interval = interval
        self._last = time.monotonic()
        self._original = self._dimse.send_msg
        self._dimse.send_msg = self._send_msg

    def _send_msg(self, primitive: Any, context_id: int) -> None:
        if isinstance(primitive, (C_GET, C_MOVE)) and primitive.Status == PENDING:
            now = time.monotonic()
            if now - self._last < self._interval:
                return
            self._last = now
        self._original(primitive, context_id)

    def close(self) -> None:
        self._dimse.send_msg = self._original
