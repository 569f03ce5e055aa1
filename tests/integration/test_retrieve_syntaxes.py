"""Retrieval in every transfer syntax, to real receivers: DCMTK storescp in each of its modes as the
C-MOVE destination, and getscu with its defaults. The study is every whole storage object pydicom
ships, each stored in its own syntax. For each receiver: DCMTK reports no error, every received
file passes dcmdump without a warning, and its decoded pixel data equals the decoded stored
original; what is not received failed visibly (Failed SOP Instance UID List, Error Comment) and
only because no syntax the receiver accepts can be made from it."""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from archive.data.models import Study
from archive.data.objects import instance_key
from archive.model.organisations import AEInfo
from pydicom.dataset import Dataset
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGLosslessSV1,
)
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove  # type: ignore[attr-defined]

from local.cloud import LocalCloud
from tests.integration.test_query_retrieve import Customer, customer, hetu, sub
from tests.support.cloud import dcmtk, getscu, s3, storescu, wait_until
from tests.support.dicom import HETU_ISSUER, STORESCU_PROPOSAL, bundled_storage_files, new_uid
from tests.support.netns import IsolatedHost

UNCOMPRESSED = {ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian}
# storescp's modes and the transfer syntaxes each accepts (storescp --help; +xs takes the default
# JPEG lossless syntax besides the uncompressed ones).
STORESCP_MODES: dict[str, set[str]] = {
    "+xi": {ImplicitVRLittleEndian},
    "+xe": UNCOMPRESSED,
    "+xb": UNCOMPRESSED,
    "+x=": UNCOMPRESSED,  # the default
    "+xs": UNCOMPRESSED | {JPEGLosslessSV1},
}
FIRST_PORT = 11112
DCMTK_PROBLEM = re.compile(r"^(E|W|F): ", re.MULTILINE)


@dataclass(frozen=True)
class Original:
    sop_class_uid: str
    transfer_syntax: str
    pixels: Any  # decoded array; None without pixel data; an exception if pydicom cannot decode
    raw_pixel_data: bytes | None


@dataclass
class StoredStudy:
    customer: Customer
    study_uid: str
    patient_id: str
    originals: dict[str, Original]


def _reidentified(directory: Path, study_uid: str, patient_id: str) -> dict[str, list[Path]]:
    """Every bundled storage object as an instance of one new study, by its own transfer syntax."""
    by_syntax: dict[str, list[Path]] = {}
    for source in bundled_storage_files():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(source.path)
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = new_uid()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = new_uid()
        ds.PatientID = patient_id
        ds.IssuerOfPatientID = HETU_ISSUER
        path = directory / f"{source.path.stem}-{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        by_syntax.setdefault(source.transfer_syntax_uid, []).append(path)
    return by_syntax


def _decode(raw: bytes) -> Original:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(io.BytesIO(raw))
        pixels: Any = None
        if "PixelData" in ds:
            try:
                pixels = ds.pixel_array
            except Exception as exc:
                pixels = exc
    return Original(
        str(ds.SOPClassUID),
        str(ds.file_meta.TransferSyntaxUID),
        pixels,
        ds.PixelData if "PixelData" in ds else None,
    )


@pytest.fixture(scope="module")
def stored(cloud: LocalCloud, tmp_path_factory: pytest.TempPathFactory) -> StoredStudy:
    # Given every whole storage object pydicom ships, stored as one study, each in its own syntax
    c = customer(cloud)
    study_uid, patient_id = new_uid(), hetu()
    by_syntax = _reidentified(tmp_path_factory.mktemp("syntaxes"), study_uid, patient_id)
    count = sum(len(files) for files in by_syntax.values())
    for syntax, files in by_syntax.items():
        result = storescu(cloud, files, aet=c.scu, extra=(STORESCU_PROPOSAL[syntax], "-R"))
        assert result.returncode == 0 and result.stderr.count("(Success)") == len(files), result.stderr
    wait_until(lambda: (s := Study.get(study_uid)) and s.number_of_instances == count, timeout=120)
    originals = {}
    for syntax, files in by_syntax.items():
        for path in files:
            sop = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
            body = s3(cloud).get_object(Bucket=cloud.settings.bucket, Key=instance_key(sop))["Body"].read()
            originals[sop] = _decode(body)
            assert originals[sop].transfer_syntax == syntax
    return StoredStudy(c, study_uid, patient_id, originals)


@pytest.fixture(scope="module")
def receivers(
    cloud: LocalCloud, stored: StoredStudy, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, tuple[str, Path, Path]]]:
    """One storescp per mode in a private namespace, each registered as a move destination."""
    c = stored.customer
    root = tmp_path_factory.mktemp("storescp")
    out: dict[str, tuple[str, Path, Path]] = {}
    with IsolatedHost() as host:
        for n, mode in enumerate(STORESCP_MODES):
            title = f"{c.dest[:12]}_{n}"
            directory, log = sub(root, mode.strip("+=") or "default"), root / f"storescp{n}.log"
            port = FIRST_PORT + n
            host.spawn(
                ["/usr/bin/storescp", "-v", mode, "-aet", title, "-od", str(directory), str(port)], log
            )
            host.wait_listening(port)
            cloud.register(c.org, AEInfo(title, c.org.oid, host.address, port, roles=("move-destination",)))
            out[mode] = (title, directory, log)
        yield out


def _move(
    cloud: LocalCloud, calling: str, destination: str, study_uid: str
) -> tuple[Dataset, Dataset | None]:
    """C-MOVE the study (a pynetdicom SCU, for the final response's identifier and comment)."""
    ae = AE(ae_title=calling)
    ae.dimse_timeout = 300
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate("127.0.0.1", cloud.dicom_port, ae_title="ARCHIVE")
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study_uid
    responses = list(assoc.send_c_move(query, destination, StudyRootQueryRetrieveInformationModelMove))
    assoc.release()
    return responses[-1]


def _check_received(
    files: list[Path], stored: StoredStudy, accepted: set[str], *, as_stored_if_accepted: bool = True
) -> set[str]:
    """Each received file: dcmdump clean, in an accepted syntax (C-MOVE: as stored when the
    receiver takes the stored syntax, which the archive proposes in a context of its own), the
    current patient, and the pixels the stored original decodes to. Returns their UIDs."""
    received = set()
    for path in files:
        dump = dcmtk("dcmdump", str(path))
        assert dump.returncode == 0 and not dump.stderr.strip(), (path.name, dump.stderr)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path)
        sop = str(ds.SOPInstanceUID)
        original = stored.originals[sop]
        syntax = str(ds.file_meta.TransferSyntaxUID)
        assert syntax in accepted, (path.name, syntax)
        if as_stored_if_accepted and original.transfer_syntax in accepted:
            assert syntax == original.transfer_syntax, (path.name, "converted although accepted as stored")
        assert ds.PatientID == stored.patient_id and ds.IssuerOfPatientID == HETU_ISSUER
        if isinstance(original.pixels, np.ndarray):
            # bit for bit for lossless syntaxes; lossy ones decoded once by the archive, same array
            assert np.array_equal(ds.pixel_array, original.pixels), (path.name, syntax)
        elif isinstance(original.pixels, Exception):
            # pydicom cannot decode it (bad image attributes, a codec it lacks): compressed, it can
            # only have gone as stored; native little endian, re-encoded around the same bytes
            if UID(original.transfer_syntax).is_compressed:
                assert syntax == original.transfer_syntax, (path.name, syntax)
            assert ds.PixelData == original.raw_pixel_data, path.name
        received.add(sop)
    return received


def _undeliverable(stored: StoredStudy, accepted: set[str], sop_classes: set[str] | None = None) -> set[str]:
    """Instances no receiver accepting ``accepted`` can get: stored in another syntax and not
    decodable, or (C-GET) of a SOP class the requester did not offer to take."""
    return {
        sop
        for sop, original in stored.originals.items()
        if (
            original.transfer_syntax not in accepted
            and UID(original.transfer_syntax).is_encapsulated
            and isinstance(original.pixels, Exception)
        )
        or (sop_classes is not None and original.sop_class_uid not in sop_classes)
    }


@pytest.mark.parametrize("mode", list(STORESCP_MODES))
def test_move_to_storescp_mode(
    cloud: LocalCloud, stored: StoredStudy, receivers: dict[str, tuple[str, Path, Path]], mode: str
) -> None:
    title, directory, log = receivers[mode]
    accepted = STORESCP_MODES[mode]
    # When the customer moves the whole study to storescp in this mode
    final, identifier = _move(cloud, stored.customer.scu, title, stored.study_uid)
    # Then storescp logged no error or warning
    assert not DCMTK_PROBLEM.findall(log.read_text(errors="replace")), log.read_text(errors="replace")[-3000:]
    # and every received file is valid, in an accepted syntax, with the original's pixels
    received = _check_received(sorted(directory.iterdir()), stored, accepted)
    # and exactly the instances that cannot be made acceptable failed, counted and listed
    expected_failed = _undeliverable(stored, accepted)
    assert received == set(stored.originals) - expected_failed
    assert final.NumberOfCompletedSuboperations == len(received)
    assert final.NumberOfFailedSuboperations == len(expected_failed)
    if expected_failed:
        assert final.Status == 0xB000 and "failed" in final.ErrorComment, final
        assert identifier is not None
        failed_list = identifier.FailedSOPInstanceUIDList
        assert set([failed_list] if isinstance(failed_list, str) else failed_list) == expected_failed
    else:
        assert final.Status == 0x0000, final


def test_getscu_with_its_defaults(cloud: LocalCloud, stored: StoredStudy, workdir: Path) -> None:
    # When getscu retrieves the study with its default proposal (uncompressed syntaxes)
    out = sub(workdir, "getscu")
    result = getscu(cloud, stored.customer.scu, stored.study_uid, out, extra=("-v", "+v"))
    log = result.stderr + result.stdout
    # Then every file it got is valid, in an uncompressed syntax, with the original's pixels (C-GET:
    # one syntax per SOP class, chosen when the requester's association was negotiated)
    received = _check_received(sorted(out.iterdir()), stored, UNCOMPRESSED, as_stored_if_accepted=False)
    # and what it did not get is exactly what cannot be made uncompressed or it did not offer to take
    offered = {s.lower() for s in re.findall(r"Abstract Syntax:\s*=?(\S+)", log)}
    offered_classes = {
        c for c in {o.sop_class_uid for o in stored.originals.values()} if _offered(c, offered)
    }
    expected_failed = _undeliverable(stored, UNCOMPRESSED, offered_classes)
    assert received == set(stored.originals) - expected_failed, log[-2000:]
    assert f"Number of Failed Suboperations    : {len(expected_failed)}" in log, log[-2000:]
    # and DCMTK reports no error, except what follows a final response with failures: getscu
    # (DcmSCU, 3.6.7) leaves that response's identifier, the Failed SOP Instance UID List PS3.4
    # C.4.3.1.3.1 requires, unread and then finds it pending when it releases the association.
    problems = [line for line in log.splitlines() if DCMTK_PROBLEM.match(line)]
    tolerated = (
        {
            "W: DIMSE status is: Warning: SubOperationsCompleteOneOrMoreFailures",
            "E: Association Release Failed: 0006:0316 DUL P-Data PDU arrived",
        }
        if expected_failed
        else set()
    )
    assert set(problems) <= tolerated, problems


def _offered(sop_class_uid: str, offered: set[str]) -> bool:
    """DCMTK prints a SOP class by its name (case differs from pydicom's keyword) or by UID."""
    return sop_class_uid in offered or UID(sop_class_uid).keyword.lower() in offered
