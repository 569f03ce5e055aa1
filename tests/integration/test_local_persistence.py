"""``make run`` keeps its data: a study stored, the runner stopped with Ctrl-C (SIGINT) and started
again on the same data directory is found and retrieved byte for byte; queued messages survive.

Runs ``python -m local`` itself, as a newcomer does, on free ports and a temporary data directory.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pydicom
import pytest

from local.cloud import ROOT, free_port
from local.resources import BUCKET, client
from tests.support.cloud import dcmtk, wait_until
from tests.support.dicom import study

# What the Makefile exports for make run.
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "layers" / "core" / "python"), str(ROOT)])}
PORT_OPTIONS = (
    "--dicom-port",
    "--moto-port",
    "--hl7-port",
    "--xds-port",
    "--dicom-tls-port",
    "--hl7-tls-port",
    "--http-port",
    "--https-port",
)


class LocalRun:
    """One ``python -m local`` process, up once its banner is printed."""

    def __init__(self, data_dir: Path, ports: dict[str, int], *extra: str) -> None:
        self.ports = ports
        self.log = data_dir.parent / f"run-{time.monotonic_ns()}.out"
        args = [arg for option, port in ports.items() for arg in (option, str(port))]
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "local", "--data-dir", str(data_dir), *args, *extra],
                cwd=ROOT,
                env=ENV,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        # Starting every process of make run takes about 20 s on a quiet machine, minutes on a busy one.
        wait_until(self._up, timeout=240, interval=0.2)

    def _up(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"python -m local exited: {self.output()}")
        return "local cloud is up" in self.output()

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['--moto-port']}"

    def interrupt(self) -> int:
        """Ctrl-C, as on ``make run``; the exit status."""
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(90)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)


@contextmanager
def local_run(data_dir: Path, ports: dict[str, int], *extra: str) -> Iterator[LocalRun]:
    run = LocalRun(data_dir, ports, *extra)
    try:
        yield run
    finally:
        run.kill()


def find_study(run: LocalRun, study_uid: str, outdir: Path) -> list[str]:
    """C-FIND (DCMTK findscu, Study Root) by Study Instance UID: "UID:instances" per answer."""
    shutil.rmtree(outdir, ignore_errors=True)
    outdir.mkdir(parents=True)
    result = dcmtk(
        "findscu", "-S", "-aet", "DEMO_PACS", "-aec", "ARCHIVE", "-X", "-od", str(outdir),
        "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}", "-k", "NumberOfStudyRelatedInstances",
        "127.0.0.1", str(run.ports["--dicom-port"]),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return [
        f"{ds.StudyInstanceUID}:{ds.NumberOfStudyRelatedInstances}"
        for ds in (pydicom.dcmread(p) for p in sorted(outdir.glob("rsp*.dcm")))
    ]


def get_study(run: LocalRun, study_uid: str, outdir: Path) -> dict[str, bytes]:
    """C-GET (DCMTK getscu) of the study; file name -> bytes as received."""
    outdir.mkdir(parents=True, exist_ok=True)
    result = dcmtk(
        "getscu", "-S", "-aet", "DEMO_PACS", "-aec", "ARCHIVE", "-od", str(outdir),
        "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}",
        "127.0.0.1", str(run.ports["--dicom-port"]),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return {p.name: p.read_bytes() for p in sorted(outdir.iterdir())}


def stored_objects(run: LocalRun) -> dict[tuple[str, str], str]:
    """(key, version) -> SHA-256 of every object version in the image bucket."""
    s3: Any = client("s3", run.endpoint)
    out = {}
    for version in s3.list_object_versions(Bucket=BUCKET).get("Versions", []):
        body = s3.get_object(Bucket=BUCKET, Key=version["Key"], VersionId=version["VersionId"])["Body"].read()
        out[(version["Key"], version["VersionId"])] = hashlib.sha256(body).hexdigest()
    return out


@pytest.mark.timeout(900)  # two whole starts and stops of make run
def test_a_study_stored_before_ctrl_c_is_found_and_retrieved_after_the_next_start(tmp_path: Path) -> None:
    data_dir = tmp_path / "local-cloud"
    ports = {option: free_port() for option in PORT_OPTIONS}
    (tmp_path / "study").mkdir()
    files = study(tmp_path / "study", 3)
    study_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    # Given make run, a study stored with storescu and indexed, and a message waiting in a queue
    # that no function consumes (the registration dead-letter queue)
    with local_run(data_dir, ports) as first:
        stored = dcmtk(
            "storescu", "-aet", "DEMO_MOD", "-aec", "ARCHIVE", "127.0.0.1", str(ports["--dicom-port"]),
            *map(str, files),
        )  # fmt: skip
        assert stored.returncode == 0, stored.stderr
        indexed = [f"{study_uid}:3"]
        found_before = wait_until(
            lambda: (found := find_study(first, study_uid, tmp_path / "find-1")) == indexed and found,
            timeout=60,
        )
        retrieved_before = get_study(first, study_uid, tmp_path / "get-1")
        objects_before = stored_objects(first)
        sqs: Any = client("sqs", first.endpoint)
        dlq = sqs.get_queue_url(QueueName="archive-registration-dlq")["QueueUrl"]
        sqs.send_message(QueueUrl=dlq, MessageBody="kept across a restart")
        # When it is stopped with Ctrl-C
        assert first.interrupt() == 0, first.output()
    assert len(retrieved_before) == 3
    assert (data_dir / "aws" / "state.pickle").exists()

    # And started again on the same data
    with local_run(data_dir, ports) as second:
        # Then C-FIND finds the study, C-GET returns the same bytes, the bucket holds the same
        # object versions with the same content, and the admin CLI knows the study
        assert find_study(second, study_uid, tmp_path / "find-2") == found_before
        assert get_study(second, study_uid, tmp_path / "get-2") == retrieved_before
        assert stored_objects(second) == objects_before
        admin = subprocess.run(
            [sys.executable, "-m", "admin", "--endpoint", second.endpoint, "retention", "show", study_uid],
            capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=60,
        )  # fmt: skip
        assert admin.returncode == 0, admin.stderr
        assert study_uid in admin.stdout
        # And the queued message is still queued
        sqs = client("sqs", second.endpoint)
        dlq = sqs.get_queue_url(QueueName="archive-registration-dlq")["QueueUrl"]
        messages = sqs.receive_message(QueueUrl=dlq, WaitTimeSeconds=1).get("Messages", [])
        assert [m["Body"] for m in messages] == ["kept across a restart"]
        assert second.interrupt() == 0, second.output()
