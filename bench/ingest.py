"""Ingest: DCMTK storescu sends the same fresh files to both archives; optionally Storage Commitment."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from .commitment import CommitmentOutcome, CommitmentRequester
from .data import StudyFiles, ct_study
from .measure import ProcessMeter, Usage
from .peers import Target, storescu_parallel

LOG = logging.getLogger("bench.ingest")


@dataclass(frozen=True)
class Workload:
    name: str  # "ct-500" | "large-20"
    label: str
    instances: int
    rows: int
    columns: int

    def generate(self, directory: Path, tag: str, seed: int) -> StudyFiles:
        return ct_study(
            directory,
            self.instances,
            rows=self.rows,
            columns=self.columns,
            patient_id=f"BENCH{tag}",
            accession=f"BA{tag}",
            seed=seed,
        )


@dataclass(frozen=True)
class IngestSample:
    system: str
    workload: str
    associations: int
    run: int
    kind: str  # "throughput" (index runner paused) | "commitment" (everything running)
    instances: int
    bytes: int
    seconds: float
    failed_associations: int
    usage: Usage  # the DICOM process, from the first C-STORE to the end (report, if any)
    helpers: dict[str, Usage]  # ours only: moto, the local Lambda runner's threads
    commitment: CommitmentOutcome | None = None

    @property
    def instances_per_second(self) -> float:
        return self.instances / self.seconds

    @property
    def megabytes_per_second(self) -> float:
        return self.bytes / 1e6 / self.seconds


def ingest_once(
    target: Target,
    workload: Workload,
    study: StudyFiles,
    *,
    associations: int,
    run: int,
    calling_ae: str,
    helpers: Mapping[str, ProcessMeter],
    requester: CommitmentRequester | None = None,
) -> IngestSample:
    """Send ``study`` on ``associations`` parallel associations; then, with ``requester``, ask for
    Storage Commitment at once and wait for the report."""
    commitment = None
    with ExitStack() as stack:
        meter = stack.enter_context(ProcessMeter(target.pid))
        for helper in helpers.values():
            stack.enter_context(helper)
        sent = storescu_parallel(target, study.files, calling_ae=calling_ae, associations=associations)
        if requester is not None:
            commitment = requester.request(target.host, target.port, target.ae_title, study.references)
    failed = sum(1 for code in sent.returncodes if code != 0)
    if failed:
        LOG.warning("%s: %d storescu association(s) failed: %s", target.name, failed, sent.errors[-500:])
    sample = IngestSample(
        system=target.name,
        workload=workload.name,
        associations=associations,
        run=run,
        kind="commitment" if requester is not None else "throughput",
        instances=len(study.files),
        bytes=study.total_bytes,
        seconds=sent.seconds,
        failed_associations=failed,
        usage=meter.usage,
        helpers={name: helper.usage for name, helper in helpers.items()},
        commitment=commitment,
    )
    LOG.info(
        "ingest %-7s %-8s x%d run %d %-10s: %6.1f inst/s %6.1f MB/s listener %.1f CPU-s%s",
        target.name,
        workload.name,
        associations,
        run,
        sample.kind,
        sample.instances_per_second,
        sample.megabytes_per_second,
        sample.usage.cpu_seconds,
        f", commitment {commitment.seconds:.2f}s (event {commitment.event_type})" if commitment else "",
    )
    return sample
