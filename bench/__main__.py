"""``make bench``: our archive and Orthanc on this machine, in the same run, side by side.

Re-executes itself in a private network namespace (see ``bench.netns``), starts both archives,
runs ingest, retrieve and query, profiles our listener, and writes bench/results/report.md with
PNG charts and the raw figures (results.json). Benchmarks report; they never assert time limits.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from local.cloud import DEMO_ORG

from .data import ISSUER, StudyFiles, StudyRecord, query_corpus
from .environment import MODALITY_AE, MODES, RECEIVER_AE, BenchEnvironment
from .ingest import Workload, ingest_once
from .iti18 import QUERIES, measure_iti18, requests_for, seed_registry
from .measure import ProcessMeter
from .netns import in_private_namespace, reexec_in_private_namespace
from .peers import Target
from .profile import (
    FIND_RULES,
    LAMBDA_RULES,
    LISTENER_CPU_RULES,
    LISTENER_RULES,
    MOTO_RULES,
    RETRIEVE_RULES,
    breakdown,
    read_folded,
    start_recording,
)
from .query import QueryLatency, measure_find, query_values, seed_orthanc, seed_ours
from .report import Results, write_report
from .retrieve import RetrieveSample, retrieve_once

LOG = logging.getLogger("bench")
T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--modes",
        default="local,aws",
        help="comma-separated: local (the stand-in as it is), aws (AWS-shaped latency on every "
        "S3/DynamoDB/SQS call, local.latency_proxy); Orthanc runs once beside them",
    )
    parser.add_argument("--runs", type=int, default=2, help="throughput runs per configuration (median)")
    parser.add_argument("--small-instances", type=int, default=500)
    parser.add_argument("--small-size", type=int, default=512, help="rows = columns of the CT images")
    parser.add_argument("--large-instances", type=int, default=20)
    parser.add_argument("--associations", default="1,4", help="parallel associations to compare")
    parser.add_argument("--query-studies", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=100, help="C-FINDs per kind, archive and mode")
    parser.add_argument(
        "--large-query-studies",
        type=int,
        default=100_000,
        help="then grow our index to this many studies and query again (0: skip)",
    )
    parser.add_argument(
        "--large-queries", type=int, default=5, help="C-FINDs (and ITI-18s) per kind and mode there"
    )
    parser.add_argument(
        "--large-query-budget",
        type=float,
        default=150.0,
        help="seconds per query kind and mode at the large size; no new query starts after it",
    )
    parser.add_argument("--skip-iti18", action="store_true", help="C-FIND only in the query phase")
    parser.add_argument(
        "--iti18-queries",
        type=int,
        default=30,
        help="ITI-18 queries per kind and mode at the first size (each is a few seconds on moto)",
    )
    parser.add_argument(
        "--query-budget",
        type=float,
        default=240.0,
        help="seconds per query kind and mode at the first size; no new query starts after it",
    )
    parser.add_argument("--retrieve-runs", type=int, default=2)
    parser.add_argument("--skip", default="", help="comma-separated: ingest,retrieve,query,profile")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/archive-bench"))
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a small smoke run (50 + 4 instances, 1 run, 500 then 2,000 studies)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.small_instances, args.large_instances = 1, 50, 4
        args.query_studies, args.queries, args.retrieve_runs = 500, 20, 1
        args.large_query_studies, args.large_queries, args.iti18_queries = 2_000, 10, 10
    args.modes = tuple(m for m in str(args.modes).split(",") if m)
    unknown = [m for m in args.modes if m not in MODES]
    if unknown or not args.modes:
        parser.error(f"--modes: {', '.join(unknown) or 'none given'}; known: {', '.join(MODES)}")
    return args


def machine() -> dict[str, str]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    dcmtk = subprocess.run(["/usr/bin/storescu", "--version"], capture_output=True, text=True).stdout
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "memory": f"{memory_gb:.1f} GiB",
        "kernel": platform.release(),
        "os": _os_release(),
        "dcmtk": "DCMTK " + (match.group(1) if (match := re.search(r"v(\d+\.\d+\.\d+)", dcmtk)) else "?"),
    }


def _os_release() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return platform.platform()


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def _sample_load(samples: list[float], stop: threading.Event) -> None:
    """The 1-minute load average every 10 s: the report says how busy the machine was throughout."""
    while not stop.wait(10.0):
        samples.append(os.getloadavg()[0])


def run_ingest(env: BenchEnvironment, args: argparse.Namespace, results: Results) -> StudyFiles | None:
    """Throughput runs (index runner paused, no S3 events), then one commitment run per workload
    with everything running, our local-mode run profiled. Returns a committed CT study for retrieval.

    Ours is measured in every mode of the run (the proxy switched between them), each with its
    own fresh study (a second copy of the same UIDs would take the duplicate path); Orthanc gets
    the first of them."""
    workloads = [
        Workload(
            "ct-500",
            f"{args.small_instances} CT images {args.small_size}x{args.small_size}",
            args.small_instances,
            args.small_size,
            args.small_size,
        ),
        Workload(
            "large-20",
            f"{args.large_instances} images of 20 MiB (4096x2560)",
            args.large_instances,
            4096,
            2560,
        ),
    ]
    results.workloads = {w.name: w.label for w in workloads}
    associations = [int(a) for a in str(args.associations).split(",") if a]
    scratch = args.work_dir / "data"
    targets = env.targets()
    committed: StudyFiles | None = None
    for workload in workloads:
        env.pause_indexing()
        env.empty_index_queue()
        env.detach_index_events()
        for n_assoc in associations:
            for run in range(args.runs):
                order = targets if run % 2 == 0 else list(reversed(targets))
                studies = _studies_per_target(workload, targets, scratch / "ingest", f"{n_assoc}{run}", run)
                for target in order:
                    if target.latency_profile:
                        # Each run of ours starts with empty queues: moto's SendMessage costs more
                        # with every message queued (docs/benchmarks.md, "Why the rate fell").
                        env.empty_index_queue()
                    results.ingest.append(
                        ingest_once(
                            env.use(target),
                            workload,
                            studies[target.name],
                            associations=n_assoc,
                            run=run,
                            calling_ae=MODALITY_AE,
                            helpers={},
                        )
                    )
                shutil.rmtree(scratch / "ingest", ignore_errors=True)
        # The commitment run: the index Lambda runs alongside, as deployed; our processes profiled.
        # First the throughput runs' copies in flight go (they would queue before this study's).
        results.dropped_backlog[workload.name] = env.drop_throughput_backlog()
        env.attach_index_events()
        env.resume_indexing()
        studies = _studies_per_target(workload, targets, scratch / f"commit-{workload.name}", "C", 99)
        runner_sqs = env.timed_index_receives()
        for target in targets:
            runner_sqs.reset()
            helpers = env.helper_meters(target)
            recordings = []
            profiled = target.name == "ours" and "profile" not in args.skip
            if profiled:
                prof = args.work_dir / "profiles"
                prof.mkdir(parents=True, exist_ok=True)
                assert env.cloud is not None and env.cloud._moto is not None
                recordings = [
                    start_recording(
                        "listener", target.pid, prof / f"{workload.name}-listener.txt", idle=True
                    ),
                    start_recording("lambda", os.getpid(), prof / f"{workload.name}-lambda.txt", idle=True),
                    start_recording(
                        "moto", env.cloud._moto.pid, prof / f"{workload.name}-moto.txt", idle=False
                    ),
                ]
                time.sleep(1.0)  # let py-spy attach before the first C-STORE
            study = studies[target.name]
            sample = ingest_once(
                env.use(target),
                workload,
                study,
                associations=1,
                run=0,
                calling_ae=MODALITY_AE,
                helpers=helpers,
                requester=env.requester,
            )
            results.ingest.append(sample)
            if target.latency_profile:
                results.runner_sqs[f"{target.name}/{workload.name}"] = {
                    name: {"calls": runner_sqs.calls[name], "seconds": runner_sqs.seconds[name]}
                    for name in runner_sqs.calls
                }
                if workload.name == "ct-500" and committed is None and sample.commitment is not None:
                    committed = study
            for recording in recordings:
                recording.stop()
            if recordings:
                prof = args.work_dir / "profiles"
                results.profiles[workload.name] = [
                    breakdown(
                        "listener: whole process, running (not blocked) samples",
                        read_folded(prof / f"{workload.name}-listener.txt", active=True),
                        LISTENER_CPU_RULES,
                        ("archive/", "listeners/"),
                    ),
                    breakdown(
                        "listener: C-STORE handler threads",
                        read_folded(prof / f"{workload.name}-listener.txt", only="_on_store"),
                        LISTENER_RULES,
                        ("archive/", "listeners/"),
                    ),
                    breakdown(
                        "index Lambda: handler time",
                        read_folded(prof / f"{workload.name}-lambda.txt", only="process_partial_response"),
                        LAMBDA_RULES,
                        ("archive/", "functions/"),
                    ),
                    breakdown(
                        "moto: CPU by emulated service",
                        read_folded(prof / f"{workload.name}-moto.txt"),
                        MOTO_RULES,
                        ("moto/",),
                    ),
                ]
        for study in studies.values():
            if study is not committed:
                shutil.rmtree(study.files[0].parent, ignore_errors=True)
    return committed


def _studies_per_target(
    workload: Workload, targets: list[Target], directory: Path, tag: str, seed: int
) -> dict[str, StudyFiles]:
    """A fresh study for each mode of ours; Orthanc gets the first one's files."""
    studies: dict[str, StudyFiles] = {}
    for n, target in enumerate(t for t in targets if t.latency_profile):
        studies[target.name] = workload.generate(
            directory / target.name, f"{workload.name[:2]}{tag}{n}", seed=seed
        )
    first = next(iter(studies.values()))
    for target in targets:
        studies.setdefault(target.name, first)
    return studies


def store_for_retrieve(env: BenchEnvironment, args: argparse.Namespace) -> StudyFiles:
    """With ingest skipped: the CT study stored once in both archives and committed (so indexed),
    for ``--skip ingest,query`` runs that measure retrieval alone."""
    workload = Workload(
        "ct-500",
        f"{args.small_instances} CT images {args.small_size}x{args.small_size}",
        args.small_instances,
        args.small_size,
        args.small_size,
    )
    study = workload.generate(args.work_dir / "data" / "retrieve", "ctR", seed=7)
    env.resume_indexing()
    for target in env.targets():
        sample = ingest_once(
            env.use(target),
            workload,
            study,
            associations=1,
            run=0,
            calling_ae=MODALITY_AE,
            helpers={},
            requester=env.requester,
        )
        if sample.commitment is None or sample.commitment.event_type != 1:
            LOG.warning(
                "%s: the study to retrieve is not wholly committed: %s", target.name, sample.commitment
            )
    return study


def run_retrieve(
    env: BenchEnvironment, args: argparse.Namespace, results: Results, study: StudyFiles
) -> None:
    for run in range(args.retrieve_runs):
        for operation in ("C-GET", "C-MOVE"):
            order = env.targets() if run % 2 == 0 else list(reversed(env.targets()))
            for target in order:
                recordings = []
                prof = args.work_dir / "profiles"
                profiled = target.name == "ours" and run == 0 and "profile" not in args.skip
                if profiled:
                    prof.mkdir(parents=True, exist_ok=True)
                    assert env.cloud is not None and env.cloud._moto is not None
                    recordings = [
                        start_recording(
                            "listener", target.pid, prof / f"{operation}-listener.txt", idle=False
                        ),
                        start_recording(
                            "moto", env.cloud._moto.pid, prof / f"{operation}-moto.txt", idle=False
                        ),
                    ]
                    time.sleep(1.0)  # let py-spy attach before the request
                sample: RetrieveSample = retrieve_once(
                    env.use(target),
                    operation,
                    study.study_uid,
                    calling_ae=RECEIVER_AE,
                    receiver_port=env.receiver_port,
                    instances=len(study.files),
                    total_bytes=study.total_bytes,
                    run=run,
                )
                for recording in recordings:
                    recording.stop()
                if profiled:
                    results.profiles[f"{operation} of the CT study"] = [
                        breakdown(
                            "listener: whole process, running (not blocked) samples",
                            read_folded(prof / f"{operation}-listener.txt", active=True),
                            RETRIEVE_RULES,
                            ("archive/", "listeners/"),
                        ),
                        breakdown(
                            "moto: CPU by emulated service",
                            read_folded(prof / f"{operation}-moto.txt"),
                            MOTO_RULES,
                            ("moto/",),
                        ),
                    ]
                LOG.info(
                    "retrieve %-8s %s run %d: %.1f inst/s (%d received, rc %d)",
                    target.name,
                    operation,
                    run,
                    sample.instances_per_second,
                    sample.received,
                    sample.returncode,
                )
                results.retrieve.append(sample)


def run_query(env: BenchEnvironment, args: argparse.Namespace, results: Results) -> None:
    """C-FIND at the first corpus size for ours (every mode) and Orthanc, then, when asked, the
    corpus grown to ``--large-query-studies`` for ours alone; DynamoDB's ScannedCount and Count
    summed over each query's pages, from the proxy."""
    assert env.orthanc is not None and env.ours is not None and env.theirs is not None
    records = list(query_corpus(args.query_studies))
    env.pause_indexing()  # nothing to index; keeps the local runner's polling out of the latencies
    results.seeding.append(seed_ours(records, DEMO_ORG.oid))
    if not args.skip_iti18:
        results.seeding.append(seed_registry(records, DEMO_ORG.oid))
    results.seeding.append(seed_orthanc(env.orthanc, records))
    for seed in results.seeding:
        LOG.info(
            "seeded %s with %d studies in %.1fs (%s)", seed.system, seed.studies, seed.seconds, seed.method
        )
    ours = [t for t in env.targets() if t.latency_profile]
    _measure_queries(
        env, args, results, records, env.targets(), args.queries, profile=True, budget=args.query_budget
    )
    if not args.skip_iti18:
        _measure_stored_queries(
            env, results, records, ours, args.iti18_queries, warmup=3, budget=args.query_budget
        )
    if args.large_query_studies > args.query_studies:
        more = list(query_corpus(args.large_query_studies - args.query_studies, start=args.query_studies))
        for seeded in (
            seed_ours(more, DEMO_ORG.oid),
            *([] if args.skip_iti18 else [seed_registry(more, DEMO_ORG.oid)]),
        ):
            results.seeding.append(seeded)
            LOG.info("seeded %s with %d more studies in %.1fs", seeded.system, seeded.studies, seeded.seconds)
        records += more
        # moto walks the whole GSI per Query: at 100,000 studies one query takes seconds to over a
        # minute on a busy machine, so this phase asks few and stops asking at its time budget.
        budget = args.large_query_budget
        try:
            _measure_queries(
                env, args, results, records, ours, args.large_queries, profile=False, warmup=0, budget=budget
            )
            if not args.skip_iti18:
                _measure_stored_queries(
                    env, results, records, ours, args.large_queries, warmup=0, budget=budget
                )
        except (RuntimeError, OSError) as error:
            # The run's other figures must still be reported.
            LOG.error("queries at %d studies failed (%s); reported without them", len(records), error)
            results.failures.append(f"query at {len(records):,} studies: {type(error).__name__}: {error}")
    for q in results.query:
        if q.queries < q.planned:
            results.failures.append(
                f"{q.system} {q.kind} at {q.studies:,} studies: {q.queries} of {q.planned} queries "
                "measured before the time budget ran out"
            )


def _measure_stored_queries(
    env: BenchEnvironment,
    results: Results,
    records: list[StudyRecord],
    targets: list[Target],
    queries: int,
    *,
    warmup: int,
    budget: float = 600.0,
) -> None:
    """ITI-18 FindDocuments and FindSubmissionSets by the same random patients as C-FIND."""
    assert env.cloud is not None
    patients = [f"{pid}^^^&{ISSUER}&ISO" for pid in query_values(records, queries)["PatientID"]]
    for kind in QUERIES:
        signed = requests_for(kind, patients, DEMO_ORG.oid)
        for target in targets:
            env.use(target)
            latency = measure_iti18(
                target.name,
                f"{env.cloud.xds_url}/xds/registry",
                kind,
                signed,
                warmup=warmup,
                reads=lambda: env.proxy_stats(reset=True),
                studies=len(records),
                budget_seconds=budget,
            )
            results.query.append(latency)
            _log_latency(f"{kind} {target.name:<8}", latency)


def _measure_queries(
    env: BenchEnvironment,
    args: argparse.Namespace,
    results: Results,
    records: list[StudyRecord],
    targets: list[Target],
    queries: int,
    *,
    profile: bool,
    warmup: int = 5,
    budget: float = 600.0,
) -> None:
    values = query_values(records, queries)
    prof = args.work_dir / "profiles"
    prof.mkdir(parents=True, exist_ok=True)
    for kind, keys in values.items():
        for target in targets:
            recordings = []
            if profile and target.name == "ours" and kind == "PatientID" and "profile" not in args.skip:
                assert env.cloud is not None and env.cloud._moto is not None
                recordings = [
                    start_recording("listener", target.pid, prof / "find-listener.txt", idle=True),
                    start_recording("moto", env.cloud._moto.pid, prof / "find-moto.txt", idle=False),
                ]
                time.sleep(1.0)
            reads = (lambda: env.proxy_stats(reset=True)) if target.latency_profile else None
            with ProcessMeter(target.pid) as meter:
                latency = measure_find(
                    env.use(target),
                    RECEIVER_AE,
                    kind,
                    keys,
                    warmup=warmup,
                    reads=reads,
                    studies=len(records),
                    budget_seconds=budget,
                )
            for recording in recordings:
                recording.stop()
            if recordings:
                results.profiles["C-FIND by PatientID"] = [
                    breakdown(
                        "listener: C-FIND handler threads",
                        read_folded(prof / "find-listener.txt", only="on_find"),
                        FIND_RULES,
                        ("archive/", "listeners/"),
                    ),
                    breakdown(
                        "moto: CPU by emulated service",
                        read_folded(prof / "find-moto.txt"),
                        MOTO_RULES,
                        ("moto/",),
                    ),
                ]
            results.query.append(latency)
            results.query_usage[f"{target.name}/{kind}/{len(records)}"] = meter.usage
            _log_latency(f"C-FIND {target.name:<8} by {kind:<15}", latency)


def _log_latency(what: str, latency: QueryLatency) -> None:
    LOG.info(
        "%s at %d studies: p50 %.1f ms p99 %.1f ms (%.1f matches, %d failures, "
        "DynamoDB examined %d returned %d)",
        what,
        latency.studies,
        latency.p50_ms,
        latency.p99_ms,
        latency.matches_per_query,
        latency.failures,
        latency.examined,
        latency.returned,
    )


class Stopped(Exception):
    """SIGTERM during a run: the current phase ends here, the later ones are skipped, and the report
    is still written with what was measured."""


_stopping = threading.Event()


def _stop(*_: object) -> None:
    if _stopping.is_set():
        sys.exit(143)  # a second SIGTERM: no report, just the archives' teardown
    _stopping.set()
    raise Stopped("stopped by SIGTERM")


def _phase(results: Results, name: str, run: Callable[[], T]) -> T | None:
    """Run one phase; a failure is recorded in the report (and the log) and the next phase runs.

    Every wait inside a phase is bounded (storescu, getscu/movescu, the commitment report, each
    C-FIND, the large-index query budget), so a phase ends; this keeps one that ends in an error
    from taking the others' figures with it. After a SIGTERM no further phase starts."""
    if _stopping.is_set():
        results.failures.append(f"{name}: not run (the run was stopped by SIGTERM)")
        return None
    started = time.monotonic()
    try:
        return run()
    except Exception as error:
        LOG.exception("phase %s failed", name)
        results.failures.append(f"{name}: {type(error).__name__}: {error}")
        return None
    finally:
        results.phase_seconds[name] = time.monotonic() - started


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not in_private_namespace():
        reexec_in_private_namespace(argv)
    args = parse_args(argv)
    # SIGTERM (an outer timeout, or a background run, where SIGINT is ignored) ends the current
    # phase, writes the report of what was measured, and tears the archives down instead of leaving
    # moto, the listener and Orthanc behind; a second SIGTERM skips the report.
    signal.signal(signal.SIGTERM, _stop)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("botocore", "urllib3", "pynetdicom", "archive", "pynamodb"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    results = Results(started=datetime.now(UTC).isoformat(timespec="seconds"), load_before=load())
    results.machine = machine()
    started = time.monotonic()
    stop_sampling = threading.Event()
    sampler = threading.Thread(target=_sample_load, args=(results.load_samples, stop_sampling), daemon=True)
    sampler.start()
    with BenchEnvironment(args.work_dir, modes=args.modes) as env:
        results.versions = env.versions()
        committed = None
        if "ingest" not in args.skip:
            committed = _phase(results, "ingest", lambda: run_ingest(env, args, results))
        if "retrieve" not in args.skip:
            _phase(
                results,
                "retrieve",
                lambda: run_retrieve(env, args, results, committed or store_for_retrieve(env, args)),
            )
        if "query" not in args.skip:
            _phase(results, "query", lambda: run_query(env, args, results))
        # Written before the archives are torn down, so a slow teardown cannot lose the figures.
        stop_sampling.set()
        results.load_after = load()
        results.wall_seconds = time.monotonic() - started
        results.parameters = {k: str(v) for k, v in vars(args).items() if k not in ("out", "work_dir")}
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(asdict(results), indent=1, default=str))
        report = write_report(results, args.out)
        print(f"report: {report}", flush=True)
    shutil.rmtree(args.work_dir / "data", ignore_errors=True)


if __name__ == "__main__":
    main()
