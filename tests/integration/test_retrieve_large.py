"""A 2 GiB multi-frame object through the real interfaces with the listener's memory flat: C-STORE
(pynetdicom streaming the file) and C-MOVE to DCMTK storescp (writing straight to disk). The
listener's peak resident set size is measured from /proc (VmHWM, reset before each step)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from archive.data.models import Study
from archive.model.organisations import AEInfo
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    StudyRootQueryRetrieveInformationModelMove,
)

from local.cloud import LocalCloud
from tests.integration.test_query_retrieve import customer, hetu, sub
from tests.support.cloud import wait_until
from tests.support.dicom import HETU_ISSUER, new_uid
from tests.support.netns import IsolatedHost
from tests.support.scu import raw_sending

ROWS = COLUMNS = 512
FRAMES = 4096  # 512 x 512 x 2 bytes x 4096 frames = 2 GiB of pixel data
PIXEL_BYTES = ROWS * COLUMNS * 2 * FRAMES
FIRST = b"FIRST-FRAME-MARK"
LAST = b"LAST-FRAME--MARK"
# The stated bound: what the listener may add to its resident set while it receives or sends the
# 2 GiB object (its chunks, pynetdicom's send window of 8 PDUs, pydicom's header, thread stacks).
RSS_BOUND_BYTES = 128 * 1024 * 1024
MIB = 1024 * 1024


def _write_big_object(path: Path, patient_id: str) -> tuple[str, str]:
    """A 2 GiB Multi-frame Grayscale Word SC image, sparse on disk: header, then zeros with a mark
    at the start of the first frame and at the end of the last."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = MultiFrameGrayscaleWordSecondaryCaptureImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = new_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = MultiFrameGrayscaleWordSecondaryCaptureImageStorage
    ds.StudyInstanceUID, ds.SeriesInstanceUID = new_uid(), new_uid()
    ds.PatientID, ds.IssuerOfPatientID, ds.PatientName = patient_id, HETU_ISSUER, "Iso^Kuva"
    ds.StudyDate, ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "20260115", "OT", 1, 1
    ds.Rows, ds.Columns, ds.NumberOfFrames = ROWS, COLUMNS, FRAMES
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.save_as(path, enforce_file_format=True)
    with open(path, "r+b") as fp:
        fp.seek(0, 2)
        fp.write(b"\xe0\x7f\x10\x00OW\x00\x00" + struct.pack("<L", PIXEL_BYTES))
        fp.write(FIRST)
        fp.seek(PIXEL_BYTES - len(FIRST) - len(LAST), 1)
        fp.write(LAST)
    return str(ds.SOPInstanceUID), str(ds.StudyInstanceUID)


def _reset_peak(pid: int) -> int:
    """Reset the process's peak RSS (Linux clear_refs 5); returns its current RSS in bytes."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return _status(pid, "VmRSS")


def _status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(field)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_two_gib_object_is_stored_and_moved_with_the_listener_memory_flat(
    cloud: LocalCloud, workdir: Path
) -> None:
    assert cloud.dicom_process is not None
    listener = cloud.dicom_process.pid
    c = customer(cloud)
    source = workdir / "big.dcm"
    sop, study_uid = _write_big_object(source, hetu())
    size = source.stat().st_size
    try:
        # When a modality sends it (pynetdicom streams the file; 1 MiB PDUs the listener announced)
        ae = AE(ae_title=c.scu)
        ae.dimse_timeout = 600
        ae.add_requested_context(MultiFrameGrayscaleWordSecondaryCaptureImageStorage, ExplicitVRLittleEndian)
        before = _reset_peak(listener)
        with raw_sending():
            assoc = ae.associate("127.0.0.1", cloud.dicom_port, ae_title="ARCHIVE")
            assert assoc.is_established
            status = assoc.send_c_store(source)
            assoc.release()
        store_growth = _status(listener, "VmHWM") - before
        # Then it is stored with the listener's memory flat
        assert status.Status == 0x0000, status
        assert store_growth < RSS_BOUND_BYTES, f"C-STORE grew the listener by {store_growth / MIB:.0f} MiB"
        wait_until(lambda: (s := Study.get(study_uid)) and s.number_of_instances == 1, timeout=300)

        # When it is moved to storescp, which writes what it receives straight to disk
        out = sub(workdir, "received")
        with IsolatedHost() as host:
            host.spawn(
                [
                    "/usr/bin/storescp",
                    "-v",
                    "+B",
                    "-pdu",
                    "131072",
                    "-aet",
                    "BIG_DEST",
                    "-od",
                    str(out),
                    "11112",
                ],
                workdir / "storescp.log",
            )
            host.wait_listening(11112)
            cloud.register(
                c.org, AEInfo("BIG_DEST", c.org.oid, host.address, 11112, roles=("move-destination",))
            )
            mover = AE(ae_title=c.scu)
            mover.dimse_timeout = 600
            mover.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
            query = Dataset()
            query.QueryRetrieveLevel = "STUDY"
            query.StudyInstanceUID = study_uid
            before = _reset_peak(listener)
            assoc = mover.associate("127.0.0.1", cloud.dicom_port, ae_title="ARCHIVE")
            assert assoc.is_established
            final = [
                s for s, _ in assoc.send_c_move(query, "BIG_DEST", StudyRootQueryRetrieveInformationModelMove)
            ][-1]
            assoc.release()
            move_growth = _status(listener, "VmHWM") - before
        # Then storescp has the whole object, marks in place, and the listener's memory stayed flat
        assert final.Status == 0x0000 and final.NumberOfCompletedSuboperations == 1, final
        [received] = list(out.iterdir())
        with open(received, "rb") as fp:
            head = fp.read(64 * 1024)
            assert FIRST in head and sop.encode() in head
            fp.seek(-len(LAST), 2)
            assert fp.read() == LAST
            assert abs(fp.tell() - size) < 4096  # the coerced header differs by a few bytes only
        assert move_growth < RSS_BOUND_BYTES, f"C-MOVE grew the listener by {move_growth / MIB:.0f} MiB"
        print(
            f"listener peak RSS growth: C-STORE {store_growth / MIB:.1f} MiB, C-MOVE {move_growth / MIB:.1f} MiB"
        )
    finally:
        source.unlink(missing_ok=True)
        for path in (workdir / "received").glob("*"):
            path.unlink()
