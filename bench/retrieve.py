"""C-GET and C-MOVE of one 500-instance study, ours against Orthanc, with DCMTK getscu/movescu.

Both clients discard what they receive (``--ignore``), so the receiver's disk is not measured.
For C-MOVE the destination is movescu's own storage SCP (AE BENCH_RECV on a fixed port), which
both archives know: our registry has it as a move destination, Orthanc's DicomModalities lists it.
Everything runs in the benchmark's private network namespace, so the archives reach it on
127.0.0.1 exactly as they reach each other.
"""

from __future__ import annotations

import re
import subprocess
import time
from dataclasses import dataclass

from .measure import ProcessMeter, Usage
from .peers import DCMTK, Target, dcmtk_env


@dataclass(frozen=True)
class RetrieveSample:
    system: str
    operation: str  # "C-GET" | "C-MOVE"
    run: int
    instances: int
    bytes: int
    seconds: float
    received: int
    returncode: int
    usage: Usage

    @property
    def instances_per_second(self) -> float:
        return self.instances / self.seconds

    @property
    def megabytes_per_second(self) -> float:
        return self.bytes / 1e6 / self.seconds


RECEIVED = re.compile(r"Received (C-)?STORE Request", re.IGNORECASE)


def _count_received(output: str) -> int:
    """DCMTK's clients log one line per incoming C-STORE at verbose level."""
    return len(RECEIVED.findall(output))


def retrieve_once(
    target: Target,
    operation: str,
    study_uid: str,
    *,
    calling_ae: str,
    receiver_port: int,
    instances: int,
    total_bytes: int,
    run: int,
    timeout: float = 600.0,
) -> RetrieveSample:
    keys = ["-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}"]
    if operation == "C-GET":
        argv = [str(DCMTK / "getscu"), "-v", "-S", "--ignore", "-aet", calling_ae]
    else:
        argv = [
            str(DCMTK / "movescu"),
            "-v",
            "-S",
            "--ignore",
            "-aet",
            calling_ae,
            "-aem",
            calling_ae,
            "--port",
            str(receiver_port),
        ]
    argv += ["-aec", target.ae_title, *keys, target.host, str(target.port)]
    with ProcessMeter(target.pid) as meter:
        start = time.monotonic()
        try:
            done = subprocess.run(argv, capture_output=True, text=True, env=dcmtk_env(), timeout=timeout)
        except subprocess.TimeoutExpired as expired:
            # Bounded: a stuck retrieval is recorded (return code -9, what arrived), not waited on.
            output = expired.stdout or ""
            output = output.decode(errors="replace") if isinstance(output, bytes) else output
            done = subprocess.CompletedProcess(argv, -9, output, "")
        seconds = time.monotonic() - start
    return RetrieveSample(
        system=target.name,
        operation=operation,
        run=run,
        instances=instances,
        bytes=total_bytes,
        seconds=seconds,
        received=_count_received(done.stdout + done.stderr),
        returncode=done.returncode,
        usage=meter.usage,
    )
