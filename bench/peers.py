"""The two archives under test, seen the same way by the benchmarks: where to call, what to meter."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

DCMTK = Path("/usr/bin")


@dataclass
class Target:
    """A DICOM archive under test."""

    name: str  # "ours" (local stand-in as-is) | "ours-aws" (AWS latency profile) | "orthanc"
    host: str
    port: int
    ae_title: str
    pid: int  # the process that does the DICOM work (what a Fargate task / a VM would bill)
    # Other processes of ours that take part, metered for context (moto, the local Lambda runner).
    helper_pids: dict[str, int] = field(default_factory=dict)
    # Ours only: the latency profile of the proxy in front of the stand-in ("none" | "aws").
    latency_profile: str = ""


def dcmtk_env() -> dict[str, str]:
    return {**os.environ, "TCP_NODELAY": "1"}


@dataclass(frozen=True)
class SendResult:
    seconds: float
    returncodes: tuple[int, ...]
    errors: str


def storescu_parallel(
    target: Target,
    files: Sequence[Path],
    *,
    calling_ae: str,
    associations: int,
    timeout: float = 900.0,
) -> SendResult:
    """Send ``files`` with ``associations`` DCMTK storescu processes at once, one association each.

    Files are dealt round-robin, so each association carries the same mix. The clock runs from the
    first process start to the last exit (each exits after its last C-STORE response and release).
    A process still sending ``timeout`` seconds after the start is killed and counts as failed
    (return code -9), so a stuck archive costs the run a bounded time and shows in the report.
    """
    chunks = [list(files[i::associations]) for i in range(associations)]
    start = time.monotonic()
    processes = [
        subprocess.Popen(
            [
                str(DCMTK / "storescu"),
                "-R",
                "-aet",
                calling_ae,
                "-aec",
                target.ae_title,
                target.host,
                str(target.port),
                *map(str, chunk),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=dcmtk_env(),
        )
        for chunk in chunks
        if chunk
    ]
    errors = []
    codes = []
    for process in processes:
        try:
            _, err = process.communicate(timeout=max(1.0, start + timeout - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            _, err = process.communicate()
            err = (err or b"") + f"\nkilled: still sending after {timeout:.0f} s".encode()
        codes.append(process.returncode)
        if err:
            errors.append(err.decode(errors="replace")[-2000:])
    return SendResult(time.monotonic() - start, tuple(codes), "\n".join(errors))
