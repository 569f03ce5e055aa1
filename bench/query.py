"""C-FIND study-level latency with 10,000 studies indexed in both archives.

Seeding, stated in the report:
- ours: Patient and Study items are written in bulk (BatchWriteItem through the archive's own
  pynamodb models), with the values the index Lambda would give them for a one-instance CT study.
  C-STORE and the index Lambda would take far longer than the benchmark's time budget at the
  local stand-in's speed (see the ingest figures); study-level C-FIND reads only these two tables.
- Orthanc: the same 10,000 one-instance studies are POSTed as DICOM files to its REST API.

Then one pynetdicom association per archive asks Study Root C-FINDs at STUDY level by a random
PatientID (4 studies each) and by a random AccessionNumber (1 study); each request is timed from
sending the C-FIND to its final response.
"""

from __future__ import annotations

import io
import logging
import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from archive.data.models import Patient, Study
from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # type: ignore[attr-defined]

from .commitment import set_nodelay
from .data import CT_IMAGE_STORAGE, ISSUER, StudyRecord, corpus_instance
from .measure import percentile
from .orthanc import Orthanc, OrthancUploader
from .peers import Target

LOG = logging.getLogger("bench.query")


@dataclass(frozen=True)
class SeedResult:
    system: str
    studies: int
    seconds: float
    method: str


@dataclass(frozen=True)
class QueryLatency:
    system: str
    kind: str  # "PatientID" | "AccessionNumber"
    queries: int
    matches_per_query: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    failures: int
    studies: int = 0  # studies in the index when measured
    # DynamoDB's ScannedCount and Count summed over every page of every Query/Scan the measured
    # queries made (from the latency proxy); -1 where not measured (Orthanc).
    examined: int = -1
    returned: int = -1
    # The most any one query examined beyond what it returned.
    worst_excess: int = -1
    # Per "Query table/index": {"requests", "scanned", "returned"} summed over the measured queries.
    reads: dict[str, dict[str, int]] = field(default_factory=dict)
    # Queries asked for; fewer were measured where the phase's time budget ran out.
    planned: int = 0


class QueryTally:
    """What the queries of one kind gave, query by query: latencies, matches, failures, and (with
    ``reads``, the latency proxy's counters) the DynamoDB items examined and returned."""

    def __init__(self, reads: Callable[[], dict[str, Any]] | None) -> None:
        self.reads = reads
        self.latencies: list[float] = []
        self.matches = self.failures = 0
        self.examined = self.returned = self.worst = 0
        self.per_index: dict[str, dict[str, int]] = {}

    def before(self) -> None:
        """Reset the proxy's counters just before a counted query."""
        if self.reads is not None:
            self.reads()

    def add(self, elapsed_seconds: float, found: int, ok: bool) -> None:
        if self.reads is not None:
            counts: dict[str, dict[str, int]] = self.reads()["reads"]
            scanned = sum(c["scanned"] for c in counts.values())
            got = sum(c["returned"] for c in counts.values())
            self.examined += scanned
            self.returned += got
            self.worst = max(self.worst, scanned - got)
            for where, c in counts.items():
                total = self.per_index.setdefault(where, {"requests": 0, "scanned": 0, "returned": 0})
                for name in total:
                    total[name] += c[name]
        self.latencies.append(elapsed_seconds * 1000)
        self.matches += found
        if not ok or found == 0:
            self.failures += 1

    def result(self, system: str, kind: str, *, studies: int, planned: int) -> QueryLatency:
        counted = self.reads is not None
        queries = len(self.latencies)
        return QueryLatency(
            system=system,
            kind=kind,
            queries=queries,
            matches_per_query=self.matches / max(1, queries),
            p50_ms=percentile(self.latencies, 50),
            p99_ms=percentile(self.latencies, 99),
            mean_ms=sum(self.latencies) / max(1, queries),
            failures=self.failures,
            studies=studies,
            examined=self.examined if counted else -1,
            returned=self.returned if counted else -1,
            worst_excess=self.worst if counted else -1,
            reads=self.per_index,
            planned=planned,
        )


def seed_ours(records: Sequence[StudyRecord], org_oid: str, threads: int = 4) -> SeedResult:
    """Patient and Study items, bulk-written through the archive's models (see module doc).

    A few writers in parallel (BatchWriteItem, 25 items each): 100,000 studies in minutes. A
    patient whose studies straddle two writers' slices is written by both, the same item."""
    start = time.monotonic()
    slices = [
        records[i * len(records) // threads : (i + 1) * len(records) // threads] for i in range(threads)
    ]
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda part: _write_index(part, org_oid), [p for p in slices if p]))
    return SeedResult(
        "ours", len(records), time.monotonic() - start, "BatchWriteItem of Patient and Study items"
    )


def _write_index(records: Sequence[StudyRecord], org_oid: str) -> None:
    now = datetime.now(UTC)
    seen_patients: set[str] = set()
    with Patient.batch_write() as patients, Study.batch_write() as studies:
        for r in records:
            key = f"{r.patient_id}^^^{ISSUER}"
            if key not in seen_patients:
                seen_patients.add(key)
                patients.save(
                    Patient(
                        key,
                        patient_id=r.patient_id,
                        issuer=ISSUER,
                        patient_name=r.patient_name,
                        birth_date="19700101",
                        sex="O",
                        org_oid=org_oid,
                        updated_at=now,
                    )
                )
            studies.save(
                Study(
                    r.study_uid,
                    patient_key=key,
                    org_oid=org_oid,
                    patient_id=r.patient_id,
                    issuer=ISSUER,
                    patient_name=r.patient_name,
                    patient_birth_date="19700101",
                    patient_sex="O",
                    study_date=r.study_date,
                    study_time="101500",
                    accession_number=r.accession,
                    study_id="1",
                    study_description="Benchmark CT",
                    referring_physician_name="Bench^Referrer",
                    specific_character_set="ISO_IR 192",
                    modalities={"CT"},
                    sop_classes={CT_IMAGE_STORAGE},
                    number_of_series=1,
                    number_of_instances=1,
                    total_bytes=2048,
                    first_received_at=now,
                    updated_at=now,
                )
            )


def seed_orthanc(orthanc: Orthanc, records: Sequence[StudyRecord], threads: int = 2) -> SeedResult:
    """The same studies as one small CT instance each, POSTed to Orthanc's REST API."""

    def encode(record: StudyRecord) -> bytes:
        buffer = io.BytesIO()
        corpus_instance(record).save_as(buffer, enforce_file_format=True)
        return buffer.getvalue()

    payloads = [encode(r) for r in records]
    start = time.monotonic()

    def upload(chunk: Sequence[bytes]) -> None:
        uploader = OrthancUploader(orthanc)
        try:
            for data in chunk:
                uploader.post_instance(data)
        finally:
            uploader.close()

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(upload, [payloads[i::threads] for i in range(threads)]))
    return SeedResult("orthanc", len(records), time.monotonic() - start, "REST POST /instances (DICOM files)")


def _identifier(kind: str, value: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.PatientID = value if kind == "PatientID" else ""
    ds.AccessionNumber = value if kind == "AccessionNumber" else ""
    ds.StudyInstanceUID = ""
    ds.PatientName = ""
    ds.StudyDate = ""
    ds.StudyDescription = ""
    ds.ModalitiesInStudy = ""
    ds.NumberOfStudyRelatedInstances = ""
    return ds


def measure_find(
    target: Target,
    calling_ae: str,
    kind: str,
    values: Sequence[str],
    *,
    warmup: int = 5,
    reads: Callable[[], dict[str, Any]] | None = None,
    studies: int = 0,
    budget_seconds: float = 600.0,
) -> QueryLatency:
    """C-FIND each value on one association; latency from request to final response.

    ``reads``, where given, returns (and resets) the proxy's DynamoDB read counts: called before
    and after each measured query, outside its timing, so each query's reads are its own.
    No new query starts once ``budget_seconds`` have passed: the figures are over those measured
    (``queries`` < ``planned`` says so), and one query waits at most the DIMSE timeout."""
    ae = AE(ae_title=calling_ae)
    # moto answers a GSI Query by walking the whole index: at 100,000 studies one C-FIND can take
    # a minute or more on a busy machine; a figure late is still a figure, within the budget.
    ae.network_timeout = 300
    ae.dimse_timeout = 300
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate(
        target.host, target.port, ae_title=target.ae_title, evt_handlers=[(evt.EVT_CONN_OPEN, set_nodelay)]
    )
    if not assoc.is_established:
        raise RuntimeError(f"C-FIND association to {target.name} refused")
    tally = QueryTally(reads)
    began = time.monotonic()
    try:
        for i, value in enumerate([*values[:warmup], *values]):
            if time.monotonic() - began > budget_seconds:
                break
            if i >= warmup:
                tally.before()
            start = time.perf_counter()
            found = 0
            final = None
            for status, identifier in assoc.send_c_find(
                _identifier(kind, value), StudyRootQueryRetrieveInformationModelFind
            ):
                code = getattr(status, "Status", None)
                if code in (0xFF00, 0xFF01):
                    found += 1 if identifier is not None else 0
                else:
                    final = code
            elapsed = time.perf_counter() - start
            if i < warmup:
                continue
            tally.add(elapsed, found, final == 0x0000)
    finally:
        assoc.release()
    return tally.result(target.name, kind, studies=studies, planned=len(values))


def query_values(records: Sequence[StudyRecord], count: int, seed: int = 7) -> dict[str, list[str]]:
    """The same random PatientIDs and AccessionNumbers for both archives."""
    rng = random.Random(seed)
    patients = sorted({r.patient_id for r in records})
    return {
        "PatientID": [rng.choice(patients) for _ in range(count)],
        "AccessionNumber": [rng.choice(records).accession for _ in range(count)],
    }
