"""Issue 15 (DICOM): the malformed-input corpus and a bounded fuzz pass, sent raw over real
associations to the listener of the local cloud.

Per class of input: no 0xA700 for bad data, no traceback in the listener's log, no success for
ambiguous data, every success stored byte-identical (and read the same by DCMTK), and the listener
still answers C-ECHO. The counts of statuses per class are printed for the record.
"""

from __future__ import annotations

import io
import re
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from archive.data.objects import instance_key
from archive.dicom.structure import dataset_offset
from pydicom.dataset import Dataset, FileMetaDataset
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from local.cloud import LocalCloud
from local.resources import BUCKET
from tests.support.cloud import ListenerLog, dcmtk, locked_copy, s3
from tests.support.malformed_dicom import (
    AMBIGUOUS,
    BAD,
    FUZZ,
    SEED_SYNTAXES,
    TOLERATED,
    Case,
    corpus,
    fuzz,
)
from tests.support.scu import raw_sending

FUZZ_SEED = 15
FUZZ_COUNT = 300
FUZZ_BUDGET_SECONDS = 60.0
REFUSED = {0xC000, 0xA900}
OUT_OF_RESOURCES = 0xA700


class RawSender:
    """One association proposing every (SOP class, syntax) the cases use; re-opened if the archive
    ends it."""

    def __init__(self, port: int, cases: Iterable[Case]) -> None:
        self.port = port
        self.ae = AE(ae_title="DEMO_MOD")
        self.ae.network_timeout = 30
        self.ae.dimse_timeout = 60
        for pair in sorted({(c.sop_class, c.transfer_syntax) for c in cases}):
            self.ae.add_requested_context(*pair)
        self.ae.add_requested_context(Verification)
        self.assoc: Any = None
        self.associations = 0

    def send(self, case: Case, workdir: Path) -> Dataset:
        if self.assoc is None or not self.assoc.is_established:
            self.assoc = self.ae.associate("127.0.0.1", self.port, ae_title="ARCHIVE")
            self.associations += 1
            assert self.assoc.is_established
        path = case.write(workdir / "case.dcm")
        # pynetdicom finds where a file's dataset starts by reading group-0002 elements until another
        # group begins, so it would take file meta elements injected into the dataset for its own
        # (and not send them). The case's dataset starts where its meta group length says.
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = case.sop_class
        meta.MediaStorageSOPInstanceUID = case.sop_instance
        meta.TransferSyntaxUID = case.transfer_syntax
        with open(path, "rb") as fp:
            split = (meta, dataset_offset(fp))
        with raw_sending(), mock.patch("pynetdicom.association.split_dataset", return_value=split):
            return self.assoc.send_c_store(path)

    def close(self) -> None:
        if self.assoc is not None and self.assoc.is_established:
            self.assoc.release()


def _stored(cloud: LocalCloud, sop: str) -> tuple[bytes, dict[str, str]]:
    locked_copy(cloud, instance_key(sop))
    response = s3(cloud).get_object(Bucket=BUCKET, Key=instance_key(sop))
    return response["Body"].read(), response["Metadata"]


def _dcmtk_reads(raw: bytes, workdir: Path) -> dict[str, str]:
    """SOP Instance UID and Study Instance UID as DCMTK's dcmdump reads the stored file."""
    path = workdir / "stored.dcm"
    path.write_bytes(raw)
    dump = dcmtk("dcmdump", "-q", "+P", "0008,0018", "+P", "0020,000d", str(path))
    found = dict(re.findall(r"\((0008,0018|0020,000d)\) UI \[([^\]]*)\]", dump.stdout))
    return {"sop": found.get("0008,0018", ""), "study": found.get("0020,000d", "")}


def _check_stored_as_sent(cloud: LocalCloud, case: Case, workdir: Path) -> dict[str, str]:
    raw, metadata = _stored(cloud, case.sop_instance)
    assert raw[dataset_offset(io.BytesIO(raw)) :] == case.dataset, case.name
    # A second, independent reader takes the object as the archive indexed it
    read = _dcmtk_reads(raw, workdir)
    assert read == {"sop": case.sop_instance, "study": metadata["study-uid"]}, case.name
    return metadata


def _run(
    cloud: LocalCloud, cases: list[Case], workdir: Path, *, budget: float | None = None
) -> tuple[dict[str, Counter[str]], list[tuple[Case, int]]]:
    """Send each case raw; return the statuses per class and the (case, status) list."""
    sender = RawSender(cloud.dicom_port, cases)
    counts: dict[str, Counter[str]] = {}
    results: list[tuple[Case, int]] = []
    deadline = time.monotonic() + budget if budget else None
    try:
        for case in cases:
            if deadline is not None and time.monotonic() > deadline:
                break
            status = sender.send(case, workdir)
            code = int(status.Status) if "Status" in status else -1
            # Every answer is a status; every refusal says why
            assert code != -1, f"{case.name}: no C-STORE response"
            if code != 0x0000:
                assert status.get("ErrorComment"), f"{case.name}: 0x{code:04X} without an Error Comment"
            counts.setdefault(case.kind, Counter())[f"0x{code:04X}"] += 1
            results.append((case, code))
    finally:
        sender.close()
    return counts, results


def _report(title: str, counts: dict[str, Counter[str]], capsys: pytest.CaptureFixture[str]) -> None:
    with capsys.disabled():
        print(f"\n{title}")
        for kind in sorted(counts):
            statuses = ", ".join(f"{status} x{n}" for status, n in sorted(counts[kind].items()))
            print(f"  {kind:10} {sum(counts[kind].values()):4} sent: {statuses}")


def _listener_still_answers(cloud: LocalCloud) -> None:
    echo = dcmtk("echoscu", "-aet", "DEMO_MOD", "-aec", "ARCHIVE", "127.0.0.1", str(cloud.dicom_port))
    assert echo.returncode == 0, echo.stderr


def test_malformed_corpus_gets_the_status_of_its_class(
    cloud: LocalCloud, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the archive's corpus of malformed C-STORE payloads
    cases = list(corpus(run="1"))
    assert {c.kind for c in cases} == {BAD, AMBIGUOUS, TOLERATED}
    log = ListenerLog(cloud)
    # When each is sent raw over a real association
    counts, results = _run(cloud, cases, workdir)
    _report("malformed DICOM corpus: C-STORE statuses per class", counts, capsys)
    assert len(results) == len(cases)
    for case, code in results:
        if case.kind in (BAD, AMBIGUOUS):
            # Then bad and ambiguous data is refused as such: never stored, never "retry later"
            assert code in REFUSED, f"{case.name}: 0x{code:04X}"
        else:
            # And what has one reading is stored as received, the irregularity on record
            assert code == 0x0000, f"{case.name}: 0x{code:04X}"
            metadata = _check_stored_as_sent(cloud, case, workdir)
            assert case.tolerated in metadata["tolerated"].split(","), case.name
    # And the listener logged what it tolerated, and no traceback
    text = log.text()
    for case in cases:
        if case.kind == TOLERATED:
            assert f"stored {case.sop_instance} from DEMO_MOD as received, tolerating: " in text, case.name
    assert "Traceback" not in text
    # And it serves on
    _listener_still_answers(cloud)


def test_bounded_fuzz_pass(cloud: LocalCloud, workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Given a few hundred seeded mutations of valid objects in four transfer syntaxes
    cases = list(fuzz(FUZZ_SEED, FUZZ_COUNT, run="1"))
    log = ListenerLog(cloud)
    # When they are sent raw, within a time budget
    counts, results = _run(cloud, cases, workdir, budget=FUZZ_BUDGET_SECONDS)
    by_mutation: dict[str, Counter[str]] = {}
    for case, code in results:
        mutation = case.name.split("-")[2]
        by_mutation.setdefault(mutation, Counter())[f"0x{code:04X}"] += 1
    _report(f"DICOM fuzz pass (seed {FUZZ_SEED}, {len(results)} of {len(cases)} sent)", by_mutation, capsys)
    assert len(results) >= min(len(cases), 100), "the time budget allowed too few mutations"
    # Then no mutation is answered "out of resources", and every success is stored as sent
    assert all(code != OUT_OF_RESOURCES for _, code in results)
    successes = [case for case, code in results if code == 0x0000]
    for case in successes:
        _check_stored_as_sent(cloud, case, workdir)
    # And both outcomes occur (the mutations neither all break nor all miss the structure)
    assert successes and len(successes) < len(results)
    assert {c.transfer_syntax for c, _ in results} == set(SEED_SYNTAXES)
    # And no traceback, and the listener serves on
    assert "Traceback" not in log.text()
    _listener_still_answers(cloud)
    assert counts.keys() == {FUZZ}
