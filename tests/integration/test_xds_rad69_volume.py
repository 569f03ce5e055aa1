"""RAD-69 at volume, over real HTTP against the local cloud, requests built by zeep from rad69.wsdl:

- a 500-instance study: the MTOM answer parsed with Python's MIME parser, each part's dataset
  byte-identical to what C-GET returns in the same transfer syntax;
- a 1 GiB study of sixteen 64 MiB instances in one answer, while the serving process's resident
  memory is sampled: it stays bounded by a few instances, not by the study.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import mmap
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests
from archive.data.models import Study
from lxml import etree
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelGet,
)

from local.cloud import DEMO_ARCHIVE, LocalCloud
from tests.integration.test_registration import hetu
from tests.integration.test_xds_interface import SCHEMA, assertion
from tests.support.cloud import dcmtk, wait_until
from tests.support.dicom import HETU_ISSUER, ct_dataset, new_uid, write
from tests.support.xds import inline_xop
from tests.support.xds_http import RS, SOAP, ZeepXdsClient, error_codes, mime_parts

OBJECT_ROWS, OBJECT_COLUMNS = 4096, 8192  # 16-bit pixels: 64 MiB per instance
LARGE_COUNT = 16  # 1 GiB in all


def indexed(study_uid: str) -> int:
    try:
        return int(Study.get(study_uid, consistent_read=True).number_of_instances or 0)
    except Study.DoesNotExist:
        return 0


def store(cloud: LocalCloud, files: list[Path]) -> None:
    """DCMTK storescu, one association; generous time limits, for a machine shared with others."""
    result = dcmtk("storescu", "-aet", "DEMO_MOD", "-aec", "ARCHIVE", "127.0.0.1", str(cloud.dicom_port),
                   *map(str, files), timeout=900)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]


def dataset_bytes(part: bytes) -> bytes:
    """The dataset of a DICOM file (Part 10): after the preamble, 'DICM' and the group 0002 whose
    length (0002,0000) states; read from the bytes, not through pydicom."""
    assert part[128:132] == b"DICM"
    tag, vr, length = struct.unpack("<I2sH", part[132:140])
    assert (tag, vr, length) == (0x00000002, b"UL", 4)
    (group_length,) = struct.unpack("<I", part[140:144])
    return part[144 + group_length :]


def c_get(cloud: LocalCloud, study_uid: str, syntax: str) -> dict[str, bytes]:
    """C-GET of the study by a pynetdicom SCU taking CT in ``syntax`` only: the datasets as received."""
    received: dict[str, bytes] = {}

    def on_store(event: Any) -> int:
        received[str(event.request.AffectedSOPInstanceUID)] = event.request.DataSet.getvalue()
        return 0x0000

    def nodelay(event: Any) -> None:
        event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    ae = AE(ae_title="DEMO_PACS")
    ae.dimse_timeout = ae.network_timeout = 120
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(CTImageStorage, [syntax])
    assoc = ae.associate(
        "127.0.0.1", cloud.dicom_port, ae_title="ARCHIVE",
        ext_neg=[build_role(CTImageStorage, scp_role=True)],
        evt_handlers=[(evt.EVT_C_STORE, on_store), (evt.EVT_CONN_OPEN, nodelay)],
    )  # fmt: skip
    assert assoc.is_established
    query = pydicom.Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study_uid
    try:
        responses = list(assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet))
    finally:
        assoc.release()
    assert responses[-1][0].Status == 0x0000, responses[-1][0]
    return received


# A volume test: minutes on a loaded machine (indexing 500 instances), seconds on an idle one.
@pytest.mark.timeout(1200)
def test_rad69_of_500_instances_equals_c_get(cloud: LocalCloud, tmp_path: Path) -> None:
    # Given a 500-instance study in two series, stored over one DCMTK association and indexed
    pid, study_uid = hetu(), new_uid()
    series = {new_uid(): [] for _ in range(2)}  # type: dict[str, list[str]]
    files = []
    for n in range(500):
        series_uid = list(series)[n % 2]
        ds = ct_dataset(patient_id=pid, study_uid=study_uid, series_uid=series_uid, instance_number=n + 1)
        series[series_uid].append(str(ds.SOPInstanceUID))
        files.append(write(ds, tmp_path))
    store(cloud, files)
    wait_until(lambda: indexed(study_uid) == 500, timeout=900, interval=0.5)
    cx = f"{pid}^^^&{HETU_ISSUER}&ISO"
    # When zeep asks RAD-69 for all of them in Implicit VR Little Endian (stored: Explicit)
    response = ZeepXdsClient(cloud.xds_url).retrieve_images(
        study_uid, series, repository_unique_id=DEMO_ARCHIVE.repository_unique_id,
        syntaxes=[ImplicitVRLittleEndian], assertion=assertion(cx),
    )  # fmt: skip
    assert response.status_code == 200
    # Then Python's MIME parser finds the envelope and 500 application/dicom parts
    parts = mime_parts(response)
    assert [t for t, _ in parts[1:]] == ["application/dicom"] * 500
    body = etree.fromstring(parts[0][1]).find(f"{{{SOAP}}}Body")[0]  # type: ignore[index]
    status = body.find(f"{{{RS}}}RegistryResponse")
    assert status is not None and status.get("status", "").endswith(":Success"), etree.tostring(status)
    assert error_codes(body) == []
    # (the body validates once each xop:Include carries its part)
    ids = [e.get("href", "")[4:] for e in body.iter("{http://www.w3.org/2004/08/xop/include}Include")]
    assert len(ids) == 500
    SCHEMA.assertValid(inline_xop(body, {cid: b"" for cid in ids}))
    # And each part is the C-GET dataset of the same instance in the same syntax, byte for byte
    got = c_get(cloud, study_uid, ImplicitVRLittleEndian)
    assert len(got) == 500
    requested = [sop for sops in series.values() for sop in sops]
    for sop, (_, part) in zip(requested, parts[1:], strict=True):
        meta = pydicom.dcmread(io.BytesIO(part), stop_before_pixels=True)
        assert meta.SOPInstanceUID == sop and meta.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
        assert dataset_bytes(part) == got[sop], sop


class RssSampler:
    """Samples a process's resident set size (VmRSS) every few milliseconds in a thread."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss(self) -> int:
        for line in Path(f"/proc/{self._pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.monotonic(), self.rss()))
            time.sleep(0.02)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def large_files(directory: Path, pid: str, study_uid: str, series_uid: str) -> Iterator[tuple[Path, str]]:
    """Sixteen 64 MiB CT instances (random pixels); yields each file and its pixels' SHA-256."""
    for n in range(LARGE_COUNT):
        ds = ct_dataset(patient_id=pid, study_uid=study_uid, series_uid=series_uid, instance_number=n + 1)
        ds.Rows, ds.Columns = OBJECT_ROWS, OBJECT_COLUMNS
        pixels = os.urandom(OBJECT_ROWS * OBJECT_COLUMNS * 2)
        ds.PixelData = pixels
        yield write(ds, directory), hashlib.sha256(pixels).hexdigest()


def split_multipart(data: mmap.mmap, boundary: bytes) -> list[tuple[bytes, int, int]]:
    """The parts of a multipart body on disk: (headers, start, end) of each part's content."""
    delimiter = b"\r\n--" + boundary
    positions = []
    position = data.find(b"--" + boundary)
    assert position == 0
    while position >= 0:
        positions.append(position)
        position = data.find(delimiter, position + 1)
    parts = []
    for start, end in itertools.pairwise(positions):
        header_start = data.find(b"\r\n", start + 2) + 2  # after the boundary line
        header_end = data.find(b"\r\n\r\n", header_start)
        parts.append((bytes(data[header_start:header_end]), header_end + 4, end))
    assert data[positions[-1] :].startswith(delimiter + b"--")
    return parts


@pytest.mark.timeout(1800)
def test_rad69_streams_a_gigabyte_with_flat_memory(cloud: LocalCloud, tmp_path: Path) -> None:
    # Given a 1 GiB study of sixteen 64 MiB instances, stored and indexed
    pid, study_uid, series_uid = hetu(), new_uid(), new_uid()
    stored = list(large_files(tmp_path, pid, study_uid, series_uid))
    sops = [str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p, _ in stored]
    store(cloud, [p for p, _ in stored])
    for path, _ in stored:
        path.unlink()  # the disk holds the answer next, not both
    wait_until(lambda: indexed(study_uid) == LARGE_COUNT, timeout=900, interval=0.5)
    assert cloud.xds_process is not None
    client = ZeepXdsClient(cloud.xds_url)
    request = client._rad69.create_message(  # zeep builds it; requests streams the answer to disk
        client.imaging,
        "DocumentRepository_RetrieveImagingDocumentSet",
        StudyRequest=[{
            "studyInstanceUID": study_uid,
            "SeriesRequest": [{"seriesInstanceUID": series_uid, "DocumentRequest": [
                {"RepositoryUniqueId": DEMO_ARCHIVE.repository_unique_id, "DocumentUniqueId": s} for s in sops
            ]}],
        }],
        TransferSyntaxUIDList={"TransferSyntaxUID": [ExplicitVRLittleEndian]},
        _soapheaders=[client._security(assertion(f"{pid}^^^&{HETU_ISSUER}&ISO"))],
    )  # fmt: skip
    sampler = RssSampler(cloud.xds_process.pid)
    baseline = sampler.rss()
    answer = tmp_path / "answer.bin"
    progress: list[tuple[float, int]] = []
    # When one RAD-69 request asks for all of it, read as it streams
    with sampler, requests.post(
        f"{cloud.xds_url}/xds/imaging",
        data=etree.tostring(request),
        headers={"Content-Type": "application/soap+xml"},
        stream=True,
        timeout=300,
    ) as response, answer.open("wb") as out:  # fmt: skip
        assert response.status_code == 200
        content_type = response.headers["Content-Type"]
        received = 0
        for block in response.iter_content(1024 * 1024):
            out.write(block)
            received += len(block)
            progress.append((time.monotonic(), received))
    # Then the answer holds every instance, its pixels unchanged
    boundary = content_type.split('boundary="', 1)[1].split('"', 1)[0].encode()
    with answer.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        parts = split_multipart(data, boundary)
        assert len(parts) == LARGE_COUNT + 1
        pixel_bytes = OBJECT_ROWS * OBJECT_COLUMNS * 2
        for (headers, start, end), sop, (_, digest) in zip(parts[1:], sops, stored, strict=True):
            assert b"application/dicom" in headers
            head = pydicom.dcmread(io.BytesIO(data[start : start + 65536]), stop_before_pixels=True)
            assert head.SOPInstanceUID == sop
            assert hashlib.sha256(data[end - pixel_bytes : end]).hexdigest() == digest
    total = answer.stat().st_size
    assert total > LARGE_COUNT * OBJECT_ROWS * OBJECT_COLUMNS * 2
    # And the serving process's memory stayed flat: bounded by a few instances, not by the study,
    # and no higher in the second half of the stream than in the first
    object_bytes = OBJECT_ROWS * OBJECT_COLUMNS * 2
    peak = max(r for _, r in sampler.samples)
    half_time = next(t for t, n in progress if n >= total // 2)
    first = max(r for t, r in sampler.samples if t < half_time)
    second = max(r for t, r in sampler.samples if t >= half_time)
    print(
        f"RAD-69 1 GiB: {total / 2**20:.0f} MiB in {progress[-1][0] - progress[0][0]:.1f} s; serving RSS "
        f"baseline {baseline / 2**20:.0f} MiB, peak {peak / 2**20:.0f} MiB (+{(peak - baseline) / 2**20:.0f}), "
        f"first half {first / 2**20:.0f}, second half {second / 2**20:.0f} MiB"
    )
    assert peak - baseline < RSS_BOUND_OBJECTS * object_bytes
    assert second <= first + object_bytes


# Bound on the serving process's growth, in instances: prefetch (2) reads in flight, the instance
# being converted and coerced, and the one being written to its spool file (see
# services/imaging_retrieve.py), plus allocator slack of one more.
RSS_BOUND_OBJECTS = 5
