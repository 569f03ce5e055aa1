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
    latencies: list[float] = []
    matches = 0
    failures = 0
    examined = returned = worst = 0
    per_index: dict[str, dict[str, int]] = {}
    began = time.monotonic()
    try:
        for i, value in enumerate([*values[:warmup], *values]):
            if time.monotonic() - began > budget_seconds:
                break
            if reads is not None and i >= warmup:
                reads()
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
            if reads is not None:
                counts: dict[str, dict[str, int]] = reads()["reads"]
                scanned = sum(c["scanned"] for c in counts.values())
                got = sum(c["returned"] for c in counts.values())
                examined, returned, worst = examined + scanned, returned + got, max(worst, scanned - got)
                for where, c in counts.items():
                    total = per_index.setdefault(where, {"requests": 0, "scanned": 0, "returned": 0})
                    for name in total:
                        total[name] += c[name]
            latencies.append(elapsed * 1000)
            matches += found
            if final != 0x0000 or found == 0:
                failures += 1
    finally:
        assoc.release()
    return QueryLatency(
        system=target.name,
        kind=kind,
        queries=len(latencies),
        matches_per_query=matches / max(1, len(latencies)),
        p50_ms=percentile(latencies, 50),
        p99_ms=percentile(latencies, 99),
        mean_ms=sum(latencies) / max(1, len(latencies)),
        failures=failures,
        studies=studies,
        examined=examined if reads is not None else -1,
        returned=returned if reads is not None else -1,
        worst_excess=worst if reads is not None else -1,
        reads=per_index,
        planned=len(values),
    )


def query_values(records: Sequence[StudyRecord], count: int, seed: int = 7) -> dict[str, list[str]]:
    """The same random PatientIDs and AccessionNumbers for both archives."""
    rng = random.Random(seed)
    patients = sorted({r.patient_id for r in records})
    return {
        "PatientID": [rng.choice(patients) for _ in range(count)],
        "AccessionNumber": [rng.choice(records).accession for _ in range(count)],
    }
