"""The listener's own C-STORE-RQ encoding (listeners/dicom/wire.py) against pynetdicom's: the same
bytes on the wire, PDU by PDU, for the peer's maximum PDU lengths that matter."""

from __future__ import annotations

from io import BytesIO

import pytest
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu import P_DATA_TF

from listeners.dicom.wire import p_data_pdus, store_request_command

SOP_CLASS = "1.2.840.10008.5.1.4.1.1.2"
SOP_INSTANCE = "1.2.826.0.1.3680043.8.498.1234567890123456789012345"  # odd length: padded


def pynetdicom_wire(
    data: bytes, max_pdu: int, *, originator: str | None = None, originator_id: int | None = None
) -> bytes:
    request = C_STORE()
    request.MessageID = 7
    request.Priority = 2
    request.AffectedSOPClassUID = SOP_CLASS
    request.AffectedSOPInstanceUID = SOP_INSTANCE
    request.MoveOriginatorApplicationEntityTitle = originator
    request.MoveOriginatorMessageID = originator_id
    request.DataSet = BytesIO(data)
    message = C_STORE_RQ()
    message.primitive_to_message(request)
    return b"".join(P_DATA_TF(p).encode() for p in message.encode_msg(3, max_pdu))


@pytest.mark.parametrize("max_pdu", [16384, 4096, 1024 * 1024, 0])
@pytest.mark.parametrize("size", [1, 16377, 16378, 16379, 530_390])
def test_store_request_is_encoded_and_fragmented_as_pynetdicom_does(max_pdu: int, size: int) -> None:
    # Given a data set of a size around a fragment boundary and a peer's maximum PDU length
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    # When the listener encodes the C-STORE request itself
    command = store_request_command(message_id=7, sop_class_uid=SOP_CLASS, sop_instance_uid=SOP_INSTANCE)
    ours = p_data_pdus(3, command, data, max_pdu)
    # Then the bytes are pynetdicom's
    assert ours == pynetdicom_wire(data, max_pdu)


def test_move_originator_is_encoded_as_pynetdicom_does() -> None:
    # Given a C-STORE sub-operation of a C-MOVE (originator AE title of odd length and its message)
    data = b"\x08\x00\x16\x00UI\x02\x001\x00"
    # When encoded by the listener
    command = store_request_command(
        message_id=7,
        sop_class_uid=SOP_CLASS,
        sop_instance_uid=SOP_INSTANCE,
        originator_aet="MOVER",
        originator_id=42,
    )
    # Then it equals pynetdicom's encoding
    assert p_data_pdus(3, command, data, 16384) == pynetdicom_wire(
        data, 16384, originator="MOVER", originator_id=42
    )


def test_every_pdu_respects_the_peers_maximum_length() -> None:
    # Given a 100 KB data set and a peer announcing 4 KB
    wire = p_data_pdus(1, b"\x00" * 100, b"\x01" * 100_000, 4096)
    # Then every P-DATA-TF PDU's length field is at most 4096 and they add up to the whole
    offset, lengths = 0, []
    while offset < len(wire):
        assert wire[offset] == 0x04
        length = int.from_bytes(wire[offset + 2 : offset + 6], "big")
        lengths.append(length)
        offset += 6 + length
    assert offset == len(wire)
    assert max(lengths) == 4096
    assert sum(length - 6 for length in lengths) == 100 + 100_000
