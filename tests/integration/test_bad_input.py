"""Bad input gets a clear failure status, nothing partial is stored, and the listener keeps serving."""

from __future__ import annotations

import socket
import struct
from pathlib import Path

import pytest
from archive.data.index import IndexRepository
from archive.data.objects import ObjectStore, instance_key
from archive.errors import ObjectTooLarge
from archive.services.ingest import StoreService
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from local.cloud import DEMO_ORG, LocalCloud
from tests.support.cloud import dcmtk, received
from tests.support.dicom import ct_dataset, new_uid, write
from tests.support.scu import Modality, part10, raw_sending


def _encoded(workdir: Path, **kwargs: object) -> tuple[str, bytes]:
    """A valid CT dataset's bytes (as they travel in C-STORE) and its SOP Instance UID."""
    ds = ct_dataset(**kwargs)  # type: ignore[arg-type]
    raw = write(ds, workdir).read_bytes()
    group_length = struct.unpack("<L", raw[140:144])[0]
    return ds.SOPInstanceUID, raw[144 + group_length :]


def _element(group: int, element: int, vr: bytes, value: bytes, length: int | None = None) -> bytes:
    n = len(value) if length is None else length
    if vr in (b"OB", b"OW", b"UN", b"SQ", b"UT"):
        return struct.pack("<HH2sHL", group, element, vr, 0, n) + value
    return struct.pack("<HH2sH", group, element, vr, n) + value


def _send_raw(cloud: LocalCloud, sop_uid: str, dataset_bytes: bytes, workdir: Path) -> object:
    path = part10(
        CTImageStorage, sop_uid, ExplicitVRLittleEndian, dataset_bytes, workdir / f"{new_uid()}.dcm"
    )
    modality = Modality(cloud.dicom_port)
    try:
        with raw_sending():
            return modality.status_dataset(path)
    finally:
        modality.release()


def _absent(cloud: LocalCloud, sop_uid: str) -> bool:
    return not received(cloud, instance_key(sop_uid))


def test_truncated_dataset_is_c000_and_not_stored(cloud: LocalCloud, workdir: Path) -> None:
    sop, encoded = _encoded(workdir)
    status = _send_raw(cloud, sop, encoded[: len(encoded) - 100], workdir)
    assert status.Status == 0xC000
    assert "runs past the end" in status.ErrorComment
    assert _absent(cloud, sop)


def test_garbage_is_c000(cloud: LocalCloud, workdir: Path) -> None:
    sop = new_uid()
    status = _send_raw(cloud, sop, bytes(range(256)) * 40, workdir)
    assert status.Status == 0xC000
    assert _absent(cloud, sop)


def test_element_length_past_the_end_is_c000(cloud: LocalCloud, workdir: Path) -> None:
    # Given a valid dataset followed by an element that claims 4 GB
    sop, encoded = _encoded(workdir)
    huge = _element(0x0009, 0x0010, b"UN", b"\0" * 16, length=0xFFFFFFF0)
    status = _send_raw(cloud, sop, encoded + huge, workdir)
    assert status.Status == 0xC000
    assert _absent(cloud, sop)


def test_wrong_length_inside_a_sequence_is_c000(cloud: LocalCloud, workdir: Path) -> None:
    # Given a sequence whose item claims more bytes than the sequence holds
    sop, encoded = _encoded(workdir)
    item = struct.pack("<HHL", 0xFFFE, 0xE000, 64) + _element(0x0008, 0x0100, b"SH", b"CODE")
    sequence = _element(0x0008, 0x1032, b"SQ", item, length=len(item))
    # Insert before Pixel Data so the rest of the dataset still follows
    cut = encoded.rindex(struct.pack("<HH", 0x7FE0, 0x0010))
    status = _send_raw(cloud, sop, encoded[:cut] + sequence + encoded[cut:], workdir)
    assert status.Status == 0xC000
    assert _absent(cloud, sop)


def test_invalid_vr_is_c000(cloud: LocalCloud, workdir: Path) -> None:
    sop, encoded = _encoded(workdir)
    cut = encoded.rindex(struct.pack("<HH", 0x7FE0, 0x0010))
    bad = struct.pack("<HH2sH", 0x0009, 0x1001, b"\x01\x02", 2) + b"ab"
    status = _send_raw(cloud, sop, encoded[:cut] + bad + encoded[cut:], workdir)
    assert status.Status == 0xC000


def test_object_over_the_size_limit_is_refused_before_anything_is_stored(
    cloud: LocalCloud, workdir: Path
) -> None:
    # Given the archive's store service with a 1 kB limit (the listener's limit is 4 GiB by default)
    assert cloud.settings is not None
    service = StoreService(
        ObjectStore(cloud.settings), IndexRepository(cloud.settings), max_object_bytes=1024
    )
    ds = ct_dataset(rows=64, columns=64)
    path = write(ds, workdir)
    with pytest.raises(ObjectTooLarge):
        service.store(
            path,
            transfer_syntax=ExplicitVRLittleEndian,
            sop_class_uid=CTImageStorage,
            sop_instance_uid=ds.SOPInstanceUID,
            calling_ae="DEMO_MOD",
            org=DEMO_ORG,
        )
    assert _absent(cloud, ds.SOPInstanceUID)


def test_listener_keeps_serving_while_a_peer_sends_garbage_or_stalls(
    cloud: LocalCloud, workdir: Path
) -> None:
    # Given one connection that sends bytes that are no PDU at all, and one that stalls mid-PDU
    garbage = socket.create_connection(("127.0.0.1", cloud.dicom_port))
    garbage.sendall(b"GET / HTTP/1.1\r\nHost: archive\r\n\r\n" * 10)
    stalled = socket.create_connection(("127.0.0.1", cloud.dicom_port))
    stalled.sendall(b"\x01\x00\x00\x00\x10\x00")  # an A-ASSOCIATE-RQ header promising 4 KB, then nothing
    try:
        # When another modality echoes and stores meanwhile
        echo = dcmtk("echoscu", "-aet", "DEMO_MOD", "-aec", "ARCHIVE", "127.0.0.1", str(cloud.dicom_port))
        modality = Modality(cloud.dicom_port)
        try:
            status = modality.store(ct_dataset())
        finally:
            modality.release()
        # Then it is served normally
        assert echo.returncode == 0, echo.stderr
        assert status == 0x0000
        # And the garbage connection was closed by the archive (not left hanging)
        garbage.settimeout(10)
        data = b""
        try:
            while chunk := garbage.recv(4096):
                data += chunk
        except (ConnectionResetError, TimeoutError):
            pass
        assert len(data) < 1024
    finally:
        garbage.close()
        stalled.close()
