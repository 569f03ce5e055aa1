"""A C-STORE request of an already encoded object, put on the wire as one write.

pynetdicom sends a DIMSE message as one P-DATA primitive per PDU: each fragment of a 512 KB object
(32 of them at DCMTK's default 16 KB PDU) makes its own trip through the queue to the network
thread, the upper-layer state machine, a P-DATA-TF object, its encoding and two event triggers,
and the command set is encoded element by element by pydicom. Profiling C-GET and C-MOVE showed
that per-PDU path as most of the listener's CPU per sent instance (docs/benchmarks.md).

For the objects the archive has encoded already (``SpooledSubOperation.encoded``), the whole
message -- command set encoded here (PS3.7 E.1, Implicit VR Little Endian), then the data set --
is cut into P-DATA-TF PDUs of at most the peer's maximum length (PS3.8 9.3.5, E.2) in one buffer,
handed to the network thread as a single ``EncodedMessage`` primitive in the same queue as every
other primitive (so ordering with other PDUs holds), and written by the data-transfer action
DT-1, which ``install()`` extends: any other P-DATA goes the usual way.
"""

from __future__ import annotations

import struct
from typing import Any

from pynetdicom import fsm
from pynetdicom.pdu_primitives import P_DATA

C_STORE_RQ = 0x0001
# CommandDataSetType: any value but 0x0101 says a data set follows; pynetdicom sends 0x0001.
DATA_SET_PRESENT = 0x0001
P_DATA_TF = 0x04
# PDV item header: item length (4), presentation context ID (1), message control header (1).
PDV_HEADER_BYTES = 6
PDU_HEADER_BYTES = 6
COMMAND_LAST = 0x03
COMMAND_MORE = 0x01
DATA_LAST = 0x02
DATA_MORE = 0x00


def _element(tag: int, value: bytes) -> bytes:
    return struct.pack("<HHI", tag >> 16, tag & 0xFFFF, len(value)) + value


def _uid(value: str) -> bytes:
    raw = value.encode("ascii")
    return raw + b"\x00" if len(raw) % 2 else raw


def _us(value: int) -> bytes:
    return struct.pack("<H", value)


def store_request_command(
    *,
    message_id: int,
    sop_class_uid: str,
    sop_instance_uid: str,
    priority: int = 2,
    originator_aet: str | None = None,
    originator_id: int | None = None,
) -> bytes:
    """The command set of a C-STORE-RQ with a data set, Implicit VR Little Endian (PS3.7 9.3.1.1)."""
    body = [
        _element(0x00000002, _uid(sop_class_uid)),
        _element(0x00000100, _us(C_STORE_RQ)),
        _element(0x00000110, _us(message_id)),
        _element(0x00000700, _us(priority)),
        _element(0x00000800, _us(DATA_SET_PRESENT)),
        _element(0x00001000, _uid(sop_instance_uid)),
    ]
    if originator_aet:
        title = originator_aet.strip().encode("ascii")
        body.append(_element(0x00001030, title + b" " if len(title) % 2 else title))
    if originator_id is not None:
        body.append(_element(0x00001031, _us(originator_id)))
    rest = b"".join(body)
    return _element(0x00000000, struct.pack("<I", len(rest))) + rest


def p_data_pdus(context_id: int, command: bytes, data_set: bytes | memoryview, max_pdu: int) -> bytes:
    """``command`` then ``data_set`` as P-DATA-TF PDUs, one PDV each, every PDU's length at most
    ``max_pdu`` (the peer's Maximum Length; 0: no limit), as pynetdicom fragments them."""
    fragment = max_pdu - PDV_HEADER_BYTES if max_pdu else max(len(command), len(data_set), 1)
    if fragment < 1:
        raise ValueError(f"maximum PDU length {max_pdu} leaves no room for data")
    out: list[bytes | memoryview] = []
    for payload, more, last in (
        (memoryview(command), COMMAND_MORE, COMMAND_LAST),
        (memoryview(data_set), DATA_MORE, DATA_LAST),
    ):
        for start in range(0, max(len(payload), 1), fragment):
            piece = payload[start : start + fragment]
            control = last if start + fragment >= len(payload) else more
            out.append(
                struct.pack(
                    ">BxIIBB", P_DATA_TF, len(piece) + PDV_HEADER_BYTES, len(piece) + 2, context_id, control
                )
            )
            out.append(piece)
    return b"".join(out)


class EncodedMessage(P_DATA):
    """A whole DIMSE message as encoded P-DATA-TF PDUs, for the network thread to write as it is."""

    def __init__(self, wire: bytes) -> None:
        super().__init__()
        self.wire = wire


_DT_1 = fsm.ACTIONS["DT-1"]


def _send_data(dul: Any) -> str:
    """DT-1 (Sta6 + Evt9): send the next P-DATA; an ``EncodedMessage`` as its bytes, in one write."""
    primitive = dul.to_provider_queue.queue[0]
    if not isinstance(primitive, EncodedMessage):
        return _DT_1[1](dul)  # type: ignore[no-any-return]
    dul.to_provider_queue.get(False)
    if dul.socket is not None:
        # AssociationSocket.send writes until done (a memoryview: no copy per partial write) and
        # turns a broken connection into Evt17, as for any PDU.
        dul.socket.send(memoryview(primitive.wire))
    return "Sta6"


def install() -> None:
    """Let the upper-layer state machine's DT-1 write ``EncodedMessage`` primitives (idempotent)."""
    fsm.ACTIONS["DT-1"] = (_DT_1[0], _send_data, _DT_1[2])
