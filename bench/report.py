"""The benchmark report: markdown with PNG charts, every figure beside Orthanc's and the ratio."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .ingest import IngestSample
from .measure import Usage, median, ratio
from .profile import Breakdown
from .query import QueryLatency, SeedResult
from .retrieve import RetrieveSample

OURS, THEIRS = "ours", "orthanc"
COLOURS = {OURS: "#1f77b4", THEIRS: "#ff7f0e", "ours-aws": "#2ca02c"}


@dataclass
class Results:
    started: str
    load_before: str
    load_after: str = ""
    load_samples: list[float] = field(default_factory=list)  # 1-minute load average every 10 s
    wall_seconds: float = 0.0
    machine: dict[str, str] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    parameters: dict[str, str] = field(default_factory=dict)
    workloads: dict[str, str] = field(default_factory=dict)
    ingest: list[IngestSample] = field(default_factory=list)
    retrieve: list[RetrieveSample] = field(default_factory=list)
    seeding: list[SeedResult] = field(default_factory=list)
    query: list[QueryLatency] = field(default_factory=list)
    query_usage: dict[str, Usage] = field(default_factory=dict)
    profiles: dict[str, list[Breakdown]] = field(default_factory=dict)
    # The local runner's SQS calls to moto in each commitment run: {workload: {call: {calls, seconds}}}
    runner_sqs: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    # Per workload: the throughput runs' copies in flight dropped before its commitment run.
    dropped_backlog: dict[str, dict[str, int]] = field(default_factory=dict)
    # Phases (or steps) that failed or ran out of their time bound: "phase: what happened".
    failures: list[str] = field(default_factory=list)
    phase_seconds: dict[str, float] = field(default_factory=dict)  # wall time of each phase


# --- aggregation ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Figures:
    """Median figures of one archive over the runs of one configuration."""

    runs: int
    ips: float
    mbs: float
    seconds: float
    failed: int
    cpu_per_1000: float
    cpu_per_gb: float
    peak_rss_mb: float
    received: int = 0
    instances: int = 0


@dataclass(frozen=True)
class Row:
    label: str  # workload or operation
    associations: int
    ours: Figures
    theirs: Figures


def _figures(picked: Sequence[IngestSample] | Sequence[RetrieveSample]) -> Figures:
    return Figures(
        runs=len(picked),
        ips=median([s.instances_per_second for s in picked]),
        mbs=median([s.megabytes_per_second for s in picked]),
        seconds=median([s.seconds for s in picked]),
        failed=sum(getattr(s, "failed_associations", 0) for s in picked),
        cpu_per_1000=median([s.usage.cpu_seconds / s.instances * 1000 for s in picked]),
        cpu_per_gb=median([s.usage.cpu_seconds / (s.bytes / 1e9) for s in picked]),
        peak_rss_mb=max((s.usage.peak_rss_bytes / 1e6 for s in picked), default=math.nan),
        received=min((getattr(s, "received", 0) for s in picked), default=0),
        instances=max((s.instances for s in picked), default=0),
    )


def throughput_rows(results: Results) -> list[Row]:
    """Median figures per (workload, associations), ours and Orthanc, throughput runs only."""
    rows = []
    keys = sorted({(s.workload, s.associations) for s in results.ingest if s.kind == "throughput"})
    for workload, n_assoc in keys:

        def pick(system: str, workload: str = workload, n_assoc: int = n_assoc) -> list[IngestSample]:
            return [
                s
                for s in results.ingest
                if s.kind == "throughput"
                and s.system == system
                and s.workload == workload
                and s.associations == n_assoc
            ]

        rows.append(Row(workload, n_assoc, _figures(pick(OURS)), _figures(pick(THEIRS))))
    return rows


def commitment_samples(results: Results, workload: str) -> dict[str, IngestSample]:
    return {
        s.system: s
        for s in results.ingest
        if s.kind == "commitment" and s.workload == workload and s.commitment is not None
    }


def retrieve_rows(results: Results) -> list[Row]:
    rows = []
    for operation in ("C-GET", "C-MOVE"):
        ours = [s for s in results.retrieve if s.system == OURS and s.operation == operation]
        theirs = [s for s in results.retrieve if s.system == THEIRS and s.operation == operation]
        if ours or theirs:
            rows.append(Row(operation, 1, _figures(ours), _figures(theirs)))
    return rows


def query_rows(results: Results) -> list[tuple[str, QueryLatency, QueryLatency]]:
    """(kind, ours, Orthanc) per kind of C-FIND key."""
    rows = []
    for kind in sorted({q.kind for q in results.query}, reverse=True):
        by_system = {q.system: q for q in results.query if q.kind == kind}
        if OURS in by_system and THEIRS in by_system:
            rows.append((kind, by_system[OURS], by_system[THEIRS]))
    return rows


# --- formatting -------------------------------------------------------------------------------


def fmt(value: float, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:,.{digits}f}"


def fmt_ratio(ours: float, theirs: float) -> str:
    r = ratio(ours, theirs)
    return "n/a" if math.isnan(r) else f"**{r:.2f}x**"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], align: str = "") -> list[str]:
    align = align or "l" + "r" * (len(header) - 1)
    marks = ["---:" if a == "r" else "---" for a in align]
    return [
        "| " + " | ".join(header) + " |",
        "| " + " | ".join(marks) + " |",
        *["| " + " | ".join(r) + " |" for r in rows],
    ]


# --- charts -----------------------------------------------------------------------------------


def _bars(
    path: Path,
    title: str,
    labels: Sequence[str],
    series: Mapping[str, Sequence[float]],
    ylabel: str,
    *,
    log: bool = False,
    wide: bool = False,
) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(14, 5) if wide else (7.5, 3.6), dpi=110)
    width = 0.8 / max(1, len(series))
    for i, (name, values) in enumerate(series.items()):
        xs = [x + (i - (len(series) - 1) / 2) * width for x in range(len(labels))]
        clean = [0.0 if math.isnan(v) else v for v in values]
        bars = ax.bar(xs, clean, width, label=name, color=COLOURS.get(name))
        for bar, value in zip(bars, values, strict=True):
            if not math.isnan(value):
                ax.annotate(
                    f"{value:.3g}",
                    (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center",
                    va="bottom",
                    fontsize=7,
                )
    if wide:
        ax.set_xticks(range(len(labels)), labels, fontsize=6, rotation=55, ha="right")
        ax.axhline(1.0, color="grey", linewidth=0.8)
    else:
        ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    if log:
        ax.set_yscale("log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return f"{path.parent.name}/{path.name}"


def _profile_chart(path: Path, breakdowns: Sequence[Breakdown]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 1.2 + 0.8 * len(breakdowns)), dpi=110)
    cmap = plt.get_cmap("tab20")
    categories: list[str] = []
    for b in breakdowns:
        for category, _ in b.shares:
            if category not in categories:
                categories.append(category)
    for row, b in enumerate(breakdowns):
        left = 0.0
        for category, share in b.shares:
            colour = cmap(categories.index(category) % 20)
            ax.barh(row, share * 100, left=left, color=colour, label=category)
            if share > 0.06:
                ax.text(left + share * 50, row, f"{share:.0%}", ha="center", va="center", fontsize=7)
            left += share * 100
    ax.set_yticks(range(len(breakdowns)), [b.name for b in breakdowns], fontsize=8)
    ax.set_xlabel("% of samples")
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    ax.legend(unique.values(), unique.keys(), fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return f"{path.parent.name}/{path.name}"


# --- the report -------------------------------------------------------------------------------


MODE_SYSTEM = {"local": "ours", "aws": "ours-aws"}
MODE_TITLE = {
    "local": "local stand-in as it is (moto)",
    "aws": "AWS latency profile (the delaying proxy in front of moto)",
}


def modes_of(results: Results) -> list[str]:
    """The modes this run measured ours in, in the order of MODE_SYSTEM."""
    samples: list[IngestSample | RetrieveSample | QueryLatency] = [
        *results.ingest,
        *results.retrieve,
        *results.query,
    ]
    systems = {s.system for s in samples}
    return [mode for mode, system in MODE_SYSTEM.items() if system in systems]


def view(results: Results, mode: str) -> Results:
    """The run as seen in one mode: ours (that mode's samples, named "ours") beside Orthanc, the
    queries at the first corpus size (every size is in the scaling section)."""
    name = MODE_SYSTEM[mode]

    def pick(samples: Sequence[Any]) -> list[Any]:
        return [
            dataclasses.replace(s, system=OURS) if s.system == name else s
            for s in samples
            if s.system in (name, THEIRS)
        ]

    first_size = min((q.studies for q in results.query), default=0)
    return dataclasses.replace(
        results,
        ingest=pick(results.ingest),
        retrieve=pick(results.retrieve),
        query=pick([q for q in results.query if q.studies == first_size]),
        runner_sqs={
            key.split("/", 1)[1]: calls
            for key, calls in results.runner_sqs.items()
            if key.startswith(f"{name}/")
        },
        profiles=results.profiles if mode == "local" else {},
    )


def _run_outcome(results: Results) -> list[str]:
    """Whether every phase completed, each phase's wall time, and what was dropped between phases."""
    lines = ["## How the run went", ""]
    if results.failures:
        lines += ["**Not everything completed.** Each wait is bounded; these ran out or failed:", ""]
        lines += [f"- {failure}" for failure in results.failures]
    else:
        lines.append("Every phase completed.")
    commitments = [s for s in results.ingest if s.commitment is not None]
    unreported = [s for s in commitments if s.commitment is not None and s.commitment.event_type != 1]
    if commitments:
        lines.append(
            f"Storage commitment: {len(commitments) - len(unreported)} of {len(commitments)} "
            "requests reported all committed"
            + (
                "; not: "
                + ", ".join(
                    f"{s.system} {s.workload} (event type {s.commitment.event_type}, "
                    f"{s.commitment.failed} failed, after {s.commitment.seconds:.0f} s)"
                    for s in unreported
                    if s.commitment is not None
                )
                if unreported
                else ""
            )
            + "."
        )
    if results.phase_seconds:
        lines += [
            "",
            "Wall time per phase: "
            + ", ".join(f"{name} {seconds / 60:.1f} min" for name, seconds in results.phase_seconds.items())
            + ".",
        ]
    for workload, dropped in results.dropped_backlog.items():
        lines += [
            "",
            f"Before the {workload} commitment run the throughput runs' copies in flight were dropped "
            "(the copier is paused during throughput runs; their instances are never committed): "
            + ", ".join(f"{count:,} {what}" for what, count in dropped.items())
            + ".",
        ]
    return [*lines, ""]


def write_report(results: Results, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    for old in [*out.glob("*.png"), *out.glob("*/*.png")]:
        old.unlink()
    modes = modes_of(results)
    lines: list[str] = [
        "# Benchmark: this archive (local cloud) vs Orthanc, same machine, same run",
        "",
        f"Run started {results.started} UTC, took {results.wall_seconds / 60:.1f} min. "
        f"Load average (1/5/15 min) before: {results.load_before}, after: {results.load_after}; "
        f"1-minute load during the run: median {fmt(median(results.load_samples), 2)}, "
        f"max {fmt(max(results.load_samples, default=math.nan), 2)} on {results.machine.get('cores', '?')} cores.",
        "",
        "Ours is measured in " + " and ".join(f"**{MODE_TITLE[m]}**" for m in modes) + ", Orthanc 1.10 "
        "(C++, SQLite index, files on local disk) once beside both, all in the same run on the same "
        "cores. In the AWS profile every S3, DynamoDB and SQS call of every process of ours waits at "
        "least a latency drawn from published figures (docs/benchmarks.md); the local stand-in is "
        "still behind it, so where moto is slower than AWS the figure is moto's. "
        "Ratios are ours / Orthanc: above 1 is better for us on throughput, worse for us on "
        "latency, CPU and memory.",
        "",
    ]
    lines += _run_outcome(results)
    lines += _headline(results, modes, out)
    lines += _machine(results)
    for mode in modes:
        mode_view = view(results, mode)
        directory = out / mode
        directory.mkdir(exist_ok=True)
        section = [
            *_ingest(mode_view, directory),
            *_cost_per_work(mode_view, directory),
            *_retrieve(mode_view, directory),
            *_query(mode_view, directory),
            *_profiles(mode_view, directory),
        ]
        lines += [f"## Mode: ours on the {MODE_TITLE[mode]}", "", *_demote(section)]
    lines += _query_scaling(results, out)
    lines += _latency_profile(results)
    lines += _costs(view(results, modes[0]) if modes else results)
    lines += _method(results)
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _demote(lines: Sequence[str]) -> list[str]:
    """One heading level down: a mode's sections sit under its own heading."""
    return [f"#{line}" if line.startswith("#") else line for line in lines]


def _summary_figures(results: Results) -> list[tuple[str, float, float, int]]:
    """(figure, ours, Orthanc, digits) of one mode's view, headline order."""
    rows: list[tuple[str, float, float, int]] = []
    for r in throughput_rows(results):
        if r.label == "ct-500":
            rows.append(
                (f"ingest {r.label}, {r.associations} assoc (instances/s)", r.ours.ips, r.theirs.ips, 1)
            )
        else:
            rows.append((f"ingest {r.label}, {r.associations} assoc (MB/s)", r.ours.mbs, r.theirs.mbs, 1))
    for workload in results.workloads:
        c = commitment_samples(results, workload)
        if OURS in c and THEIRS in c:
            rows.append(
                (
                    f"last C-STORE to commitment report, {workload} (s)",
                    _commit_seconds(c[OURS]),
                    _commit_seconds(c[THEIRS]),
                    2,
                )
            )
    for r in throughput_rows(results):
        if r.label == "ct-500" and r.associations == 1:
            rows.append(
                (
                    "CPU-s per 1,000 instances stored (DICOM process)",
                    r.ours.cpu_per_1000,
                    r.theirs.cpu_per_1000,
                    1,
                )
            )
            rows.append(("peak RSS while storing (MB)", r.ours.peak_rss_mb, r.theirs.peak_rss_mb, 0))
    for r in retrieve_rows(results):
        rows.append((f"{r.label} of the CT study (instances/s)", r.ours.ips, r.theirs.ips, 1))
    for kind, mine, orthanc in query_rows(results):
        size = f"{mine.studies:,} studies" if mine.studies else ""
        for label, a, b in (("p50", mine.p50_ms, orthanc.p50_ms), ("p99", mine.p99_ms, orthanc.p99_ms)):
            rows.append((f"C-FIND by {kind}, {label}, {size} (ms)", a, b, 2))
    return rows


def _headline(results: Results, modes: Sequence[str], out: Path) -> list[str]:
    """One row per figure: ours in every mode, Orthanc, and each mode's ratio."""
    per_mode = {mode: {row[0]: row for row in _summary_figures(view(results, mode))} for mode in modes}
    labels: list[str] = []
    for mode in modes:
        labels += [label for label in per_mode[mode] if label not in labels]
    if not labels:
        return []
    rows = []
    ratios: dict[str, list[float]] = {mode: [] for mode in modes}
    for label in labels:
        found = [per_mode[m][label] for m in modes if label in per_mode[m]]
        digits = found[0][3]
        theirs = found[0][2]
        cells = [label]
        for mode in modes:
            row = per_mode[mode].get(label)
            cells.append(fmt(row[1], digits) if row else "n/a")
        cells.append(fmt(theirs, digits))
        for mode in modes:
            row = per_mode[mode].get(label)
            cells.append(fmt_ratio(row[1], row[2]) if row else "n/a")
            ratios[mode].append(ratio(row[1], row[2]) if row else math.nan)
        rows.append(cells)
    header = [
        "figure",
        *[f"ours, {mode}" for mode in modes],
        "Orthanc",
        *[f"ours {mode} / Orthanc" for mode in modes],
    ]
    (out / "both").mkdir(exist_ok=True)
    chart = _bars(
        out / "both" / "headline_ratios.png",
        "ours / Orthanc per figure (throughput: above 1 is better; time, CPU, memory: below 1)",
        [label.replace(" (", "\n(").replace(", p", "\np") for label in labels],
        {MODE_SYSTEM[m]: ratios[m] for m in modes},
        "ratio (log)",
        log=True,
        wide=True,
    )
    return [
        "## Headline: ratios first",
        "",
        *_table(header, rows),
        "",
        f"![ratios in both modes]({chart})",
        "",
    ]


def _commit_seconds(sample: IngestSample) -> float:
    return sample.commitment.seconds if sample.commitment is not None else math.nan


def _machine(results: Results) -> list[str]:
    m, v = results.machine, results.versions
    return [
        "## Machine and versions",
        "",
        f"- CPU: {m.get('cpu')}, {m.get('cores')} cores; memory {m.get('memory')}; "
        f"{m.get('os')}, kernel {m.get('kernel')}",
        f"- Orthanc {v.get('orthanc')} (Debian package), {m.get('dcmtk')}",
        f"- Python {v.get('python')}, pynetdicom {v.get('pynetdicom')}, pydicom {v.get('pydicom')}, "
        f"moto {v.get('moto')}, boto3 {v.get('boto3')}, pynamodb {v.get('pynamodb')}",
        "- Parameters: " + ", ".join(f"{k}={val}" for k, val in sorted(results.parameters.items())),
        "",
    ]


def _ingest(results: Results, out: Path) -> list[str]:
    rows = throughput_rows(results)
    if not rows:
        return []
    labels = [f"{r.label}\n{r.associations} assoc" for r in rows]
    chart_ips = _bars(
        out / "ingest_instances_per_s.png",
        "Ingest throughput (median of runs)",
        labels,
        {OURS: [r.ours.ips for r in rows], THEIRS: [r.theirs.ips for r in rows]},
        "instances/s",
        log=True,
    )
    chart_mbs = _bars(
        out / "ingest_mb_per_s.png",
        "Ingest throughput (median of runs)",
        labels,
        {OURS: [r.ours.mbs for r in rows], THEIRS: [r.theirs.mbs for r in rows]},
        "MB/s",
    )
    lines = [
        "## Ingest (DCMTK storescu, TCP_NODELAY)",
        "",
        "Fresh files (new UIDs) for every run, the same files to both archives, the order of the two "
        "alternating between runs. Throughput runs: the local Lambda runner (index function) is paused "
        "while storescu sends, since on AWS it does not share the listener's CPU; its S3 events are then "
        "discarded. Orthanc indexes inside its C-STORE, so its figure includes its index; ours does not "
        "(the commitment run below has everything running).",
        "",
        *_table(
            [
                "workload",
                "assoc",
                "ours inst/s",
                "Orthanc inst/s",
                "ratio",
                "ours MB/s",
                "Orthanc MB/s",
                "ratio",
                "runs",
                "failed assoc (ours/Orthanc)",
            ],
            [
                [
                    r.label,
                    str(r.associations),
                    fmt(r.ours.ips),
                    fmt(r.theirs.ips),
                    fmt_ratio(r.ours.ips, r.theirs.ips),
                    fmt(r.ours.mbs),
                    fmt(r.theirs.mbs),
                    fmt_ratio(r.ours.mbs, r.theirs.mbs),
                    f"{r.ours.runs}/{r.theirs.runs}",
                    f"{r.ours.failed}/{r.theirs.failed}",
                ]
                for r in rows
            ],
            "llrrrrrrrr",
        ),
        "",
        f"![instances per second]({chart_ips})",
        "",
        f"![MB per second]({chart_mbs})",
        "",
        "### Storage commitment: last C-STORE to the N-EVENT-REPORT",
        "",
        "One more study per workload, sent on one association with everything running (the index "
        "Lambda alongside, as deployed; our processes under py-spy at 50 Hz). Right after storescu's "
        "last C-STORE response a pynetdicom SCU opens an association, sends the N-ACTION for every "
        "instance and waits for the report: on that association, or on a new one to its own SCP "
        "(Orthanc always opens a new one; ours does when the requester's association has gone idle "
        "past the listener's 60 s network timeout).",
        "",
    ]
    rows_c = []
    names: list[str] = []
    series: dict[str, list[float]] = {OURS: [], THEIRS: []}
    for workload in results.workloads:
        c = commitment_samples(results, workload)
        if OURS not in c or THEIRS not in c:
            continue
        o, t = c[OURS], c[THEIRS]
        names.append(workload)
        series[OURS].append(_commit_seconds(o))
        series[THEIRS].append(_commit_seconds(t))
        rows_c.append(
            [
                workload,
                fmt(_commit_seconds(o), 2),
                fmt(_commit_seconds(t), 2),
                fmt_ratio(_commit_seconds(o), _commit_seconds(t)),
                _committed(o),
                _committed(t),
                fmt(o.instances_per_second),
                fmt(t.instances_per_second),
            ]
        )
    if rows_c:
        chart = _bars(
            out / "commitment.png", "Last C-STORE to commitment report", names, series, "seconds", log=True
        )
        lines += _table(
            [
                "workload",
                "ours (s)",
                "Orthanc (s)",
                "ratio",
                "ours committed",
                "Orthanc committed",
                "ours inst/s in this run",
                "Orthanc inst/s in this run",
            ],
            rows_c,
        )
        lines += ["", f"![commitment]({chart})", ""]
    for workload, calls in results.runner_sqs.items():
        ours_sample = commitment_samples(results, workload).get(OURS)
        receive = calls.get("receive_message", {})
        delete = calls.get("delete_message_batch", {})
        if ours_sample is None or not receive:
            continue
        lines.append(
            f"- {workload}: in our commitment run ({fmt(ours_sample.seconds + _commit_seconds(ours_sample), 1)} s from first "
            f"C-STORE to report) the local runner's index poller(s) (the stand-in for Lambda's SQS event source mapping) spent "
            f"{fmt(receive['seconds'], 1)} s in {int(receive['calls'])} ReceiveMessage calls to moto (mean "
            f"{fmt(receive['seconds'] / max(1, receive['calls']), 2)} s, including up to 1 s of long poll when "
            f"the queue was empty) and {fmt(delete.get('seconds', 0.0), 1)} s in "
            f"{int(delete.get('calls', 0))} DeleteMessageBatch calls. moto's SQS slows down as its queue grows "
            "(on this machine ReceiveMessage of 10 took ~0.25 s with 20 messages queued and ~1.4 s with 200); "
            "real SQS does not."
        )
    if results.runner_sqs:
        lines.append("")
    return lines


def _committed(sample: IngestSample) -> str:
    c = sample.commitment
    if c is None or c.event_type == 0:
        return "no report"
    where = "same" if c.same_association else "new"
    return f"{c.committed}/{sample.instances}, {c.failed} failed ({where} assoc)"


def _cost_per_work(results: Results, out: Path) -> list[str]:
    rows = throughput_rows(results)
    if not rows:
        return []
    lines = [
        "## Cost per work: CPU and memory of the DICOM process (what Fargate bills)",
        "",
        "CPU seconds (user + system) of our listener process and of Orthanc's process over each "
        "throughput run, per 1,000 instances and per GB; peak RSS is the kernel's high-water mark over "
        "the run (reset before it). Orthanc's process also does its indexing; ours hands that to the "
        "index Lambda and to S3/DynamoDB, shown below from the commitment run.",
        "",
        *_table(
            [
                "workload",
                "assoc",
                "ours CPU-s/1000",
                "Orthanc CPU-s/1000",
                "ratio",
                "ours CPU-s/GB",
                "Orthanc CPU-s/GB",
                "ours peak RSS MB",
                "Orthanc peak RSS MB",
                "ratio",
            ],
            [
                [
                    r.label,
                    str(r.associations),
                    fmt(r.ours.cpu_per_1000),
                    fmt(r.theirs.cpu_per_1000),
                    fmt_ratio(r.ours.cpu_per_1000, r.theirs.cpu_per_1000),
                    fmt(r.ours.cpu_per_gb),
                    fmt(r.theirs.cpu_per_gb),
                    fmt(r.ours.peak_rss_mb, 0),
                    fmt(r.theirs.peak_rss_mb, 0),
                    fmt_ratio(r.ours.peak_rss_mb, r.theirs.peak_rss_mb),
                ]
                for r in rows
            ],
            "llrrrrrrrr",
        ),
        "",
    ]
    chart = _bars(
        out / "cpu_per_1000.png",
        "CPU seconds per 1,000 instances stored (DICOM process)",
        [f"{r.label}\n{r.associations} assoc" for r in rows],
        {OURS: [r.ours.cpu_per_1000 for r in rows], THEIRS: [r.theirs.cpu_per_1000 for r in rows]},
        "CPU-s / 1000 instances",
        log=True,
    )
    lines += [f"![CPU per 1000]({chart})", ""]
    commit_rows = []
    for workload in results.workloads:
        c = commitment_samples(results, workload)
        if OURS not in c or THEIRS not in c:
            continue
        o, t = c[OURS], c[THEIRS]
        per = 1000 / o.instances
        lam, moto = o.helpers.get("lambda"), o.helpers.get("moto")
        commit_rows.append(
            [
                workload,
                fmt(o.usage.cpu_seconds * per),
                fmt(lam.cpu_seconds * per if lam else math.nan),
                fmt(moto.cpu_seconds * per if moto else math.nan),
                fmt(t.usage.cpu_seconds * 1000 / t.instances),
                fmt(o.usage.peak_rss_bytes / 1e6, 0),
                fmt(moto.peak_rss_bytes / 1e6 if moto else math.nan, 0),
                fmt(t.usage.peak_rss_bytes / 1e6, 0),
            ]
        )
    if commit_rows:
        lines += [
            "Whole pipeline in the commitment run (store, index, commitment), CPU-s per 1,000 instances. "
            "moto is the local stand-in for S3/DynamoDB/SQS: not compute we would pay for on AWS, shown "
            "because it shares the two cores here.",
            "",
            *_table(
                [
                    "workload",
                    "ours listener",
                    "ours index Lambda",
                    "moto (stand-in)",
                    "Orthanc",
                    "ours listener peak RSS MB",
                    "moto peak RSS MB",
                    "Orthanc peak RSS MB",
                ],
                commit_rows,
            ),
            "",
        ]
    return lines


def _retrieve(results: Results, out: Path) -> list[str]:
    rows = retrieve_rows(results)
    if not rows:
        return ["## Retrieve", "", "Not run (it needs the committed CT study of the ingest part).", ""]
    chart = _bars(
        out / "retrieve.png",
        "Retrieve the CT study (median of runs)",
        [r.label for r in rows],
        {OURS: [r.ours.ips for r in rows], THEIRS: [r.theirs.ips for r in rows]},
        "instances/s",
    )
    return [
        "## Retrieve (DCMTK getscu / movescu, study level)",
        "",
        "The committed CT study, whole, from each archive; the clients discard what they receive "
        "(`--ignore`). C-MOVE's destination is movescu's own storage SCP (AE BENCH_RECV), registered "
        "in both archives at 127.0.0.1 inside the benchmark's network namespace.",
        "",
        *_table(
            [
                "operation",
                "ours (s)",
                "Orthanc (s)",
                "ours inst/s",
                "Orthanc inst/s",
                "ratio",
                "ours MB/s",
                "Orthanc MB/s",
                "received ours, Orthanc",
                "ours CPU-s/1000",
                "Orthanc CPU-s/1000",
                "runs",
            ],
            [
                [
                    r.label,
                    fmt(r.ours.seconds, 2),
                    fmt(r.theirs.seconds, 2),
                    fmt(r.ours.ips),
                    fmt(r.theirs.ips),
                    fmt_ratio(r.ours.ips, r.theirs.ips),
                    fmt(r.ours.mbs),
                    fmt(r.theirs.mbs),
                    f"{r.ours.received}/{r.ours.instances}, {r.theirs.received}/{r.theirs.instances}",
                    fmt(r.ours.cpu_per_1000),
                    fmt(r.theirs.cpu_per_1000),
                    f"{r.ours.runs}/{r.theirs.runs}",
                ]
                for r in rows
            ],
        ),
        "",
        f"![retrieve]({chart})",
        "",
    ]


def _query(results: Results, out: Path) -> list[str]:
    rows = query_rows(results)
    if not rows:
        return []
    lines = [
        f"## Query: C-FIND at STUDY level with {max(o.studies for _, o, _ in rows):,} studies indexed",
        "",
        *[
            f"- Seeding {s.system}: {s.studies:,} studies in {s.seconds:.1f} s by {s.method}."
            for s in results.seeding
        ],
        "- Then one association per archive (pynetdicom, TCP_NODELAY), Study Root, the same random keys "
        "for both; 5 warm-up queries not counted; each latency from the request to the final response.",
        "",
        *_table(
            [
                "key",
                "queries",
                "matches/query ours, Orthanc",
                "ours p50 ms",
                "Orthanc p50 ms",
                "ratio",
                "ours p99 ms",
                "Orthanc p99 ms",
                "ratio",
                "failed ours/Orthanc",
            ],
            [
                [
                    kind,
                    str(o.queries),
                    f"{o.matches_per_query:.1f}, {t.matches_per_query:.1f}",
                    fmt(o.p50_ms, 2),
                    fmt(t.p50_ms, 2),
                    fmt_ratio(o.p50_ms, t.p50_ms),
                    fmt(o.p99_ms, 2),
                    fmt(t.p99_ms, 2),
                    fmt_ratio(o.p99_ms, t.p99_ms),
                    f"{o.failures}/{t.failures}",
                ]
                for kind, o, t in rows
            ],
        ),
    ]
    labels = [f"by {kind}" for kind, _, _ in rows]
    p50 = {OURS: [o.p50_ms for _, o, _ in rows], THEIRS: [t.p50_ms for _, _, t in rows]}
    p99 = {OURS: [o.p99_ms for _, o, _ in rows], THEIRS: [t.p99_ms for _, _, t in rows]}
    chart50 = _bars(out / "cfind_p50.png", "C-FIND latency p50", labels, p50, "ms", log=True)
    chart99 = _bars(out / "cfind_p99.png", "C-FIND latency p99", labels, p99, "ms", log=True)
    return [*lines, "", f"![C-FIND p50]({chart50})", "", f"![C-FIND p99]({chart99})", ""]


def _query_scaling(results: Results, out: Path) -> list[str]:
    """Section 5 of issue 14: what DynamoDB examined versus returned, per query, as the index grows."""
    ours = [q for q in results.query if q.examined >= 0]
    if not ours:
        return []
    sizes = sorted({q.studies for q in ours})
    rows = []
    differ = []
    kinds = sorted({q.kind for q in ours}, key=_kind_order)
    for q in sorted(ours, key=lambda q: (_kind_order(q.kind), q.studies, q.system)):
        mode = next((m for m, name in MODE_SYSTEM.items() if name == q.system), q.system)
        if q.examined != q.returned:
            differ.append(q)
        rows.append(
            [
                _kind_label(q.kind),
                f"{q.studies:,}",
                mode,
                str(q.queries),
                fmt(q.p50_ms, 2),
                fmt(q.p99_ms, 2),
                f"{q.matches_per_query:.1f}",
                f"{q.examined / max(1, q.queries):.2f}",
                f"{q.returned / max(1, q.queries):.2f}",
                str(q.worst_excess),
                "; ".join(
                    f"{where}: {c['requests'] / max(1, q.queries):.2f} req, "
                    f"{c['scanned'] / max(1, q.queries):.2f}/{c['returned'] / max(1, q.queries):.2f}"
                    for where, c in sorted(q.reads.items())
                ),
            ]
        )
    verdict = (
        "**Every query examined exactly what it returned** (ScannedCount = Count on every page)."
        if not differ
        else "**Some queries examined more than they returned:** "
        + "; ".join(
            f"{_kind_label(q.kind)} at {q.studies:,} ({q.system}): {q.examined} vs {q.returned}"
            for q in differ
        )
    )
    lines = [
        "## Queries as the index grows: DynamoDB items examined vs returned",
        "",
        "Our index seeded with " + " and then ".join(f"{n:,}" for n in sizes) + " studies (4 per patient) "
        "by BatchWriteItem through the archive's own models (C-STORE and the index Lambda would take "
        "hours at the stand-in's speed). The proxy in front of the stand-in reads DynamoDB's own "
        "`ScannedCount` and `Count` from every Query and Scan response; each query's figures are "
        "summed over all its pages and tables, the proxy's counters reset before each query. The "
        "bigger corpus is queried fewer times (moto answers a GSI Query by walking the whole index, "
        "so its latency there is moto's, not DynamoDB's). Reads by other threads of the listener "
        "in the same moment are counted too: `archive-commitments/pending` is its storage "
        "commitment worker polling, not part of the query. ITI-18 (FindDocuments, FindSubmissionSets) "
        "is asked over HTTP of the XDS endpoint with a signed XUA assertion, by the same random "
        "patients as C-FIND by PatientID; its registry was seeded with each study's manifest "
        "submission (DocumentEntry, SubmissionSet, association) the same way. Its reads include "
        "the patient check (`archive-patients`, a GetItem, not counted) and the `by_patient` index "
        "of `archive-xds_registry`; ITI-18 has no Orthanc counterpart.",
        "",
        verdict,
        "",
        *_table(
            [
                "query",
                "studies",
                "mode",
                "queries",
                "p50 ms",
                "p99 ms",
                "matches/query",
                "examined/query",
                "returned/query",
                "worst query: examined - returned",
                "per table/index: requests, examined/returned per query",
            ],
            rows,
            "llllrrrrrrl",
        ),
        "",
    ]
    series: dict[str, list[float]] = {}
    labels = [f"{_kind_label(kind)}\n{n:,} studies" for kind in kinds for n in sizes]
    for name in MODE_SYSTEM.values():
        values = []
        for kind in kinds:
            for n in sizes:
                match = [q.p50_ms for q in ours if q.system == name and q.kind == kind and q.studies == n]
                values.append(match[0] if match else math.nan)
        if any(not math.isnan(v) for v in values):
            series[name] = values
    (out / "both").mkdir(exist_ok=True)
    chart = _bars(
        out / "both" / "cfind_scaling_p50.png",
        "C-FIND and ITI-18 p50 as the index grows",
        labels,
        series,
        "ms",
        log=True,
    )
    return [*lines, f"![query p50 by index size]({chart})", ""]


def _kind_order(kind: str) -> tuple[int, str]:
    """C-FIND by PatientID, by AccessionNumber, then the ITI-18 queries."""
    return ({"PatientID": 0, "AccessionNumber": 1}.get(kind, 2), kind)


def _kind_label(kind: str) -> str:
    return kind if kind.startswith("ITI-") else f"C-FIND by {kind}"


def _latency_profile(results: Results) -> list[str]:
    from local.latency_proxy import AWS_PROFILE

    rows = [[key, fmt(lat.median_ms, 0), fmt(lat.p99_ms, 0)] for key, lat in AWS_PROFILE.items()]
    return [
        "## The AWS latency profile",
        "",
        "Per operation a log-normal latency with this median and 99th percentile (ms), drawn per "
        "request from a seeded generator; the proxy answers no earlier than the drawn latency after "
        "the whole request arrived, and no earlier than the stand-in answered. Sources and reasoning "
        "in docs/benchmarks.md. Buckets named `*--x-s3` (S3 Express One Zone directory buckets) get "
        "the s3express rows.",
        "",
        *_table(["service:operation", "median ms", "p99 ms"], rows),
        "",
    ]


def _profiles(results: Results, out: Path) -> list[str]:
    if not results.profiles:
        return []
    lines = [
        "## Where the time goes (py-spy)",
        "",
        "py-spy sampled our listener process and the Lambda runner's threads (waiting included) and "
        "moto's process (CPU only) during each workload's commitment run and during the C-FIND-by-"
        'PatientID run. Each bar splits the samples of the named threads into categories; "waiting for '
        "moto\" is time our code spent blocked on the local stand-in's answer: on AWS that is S3/DynamoDB "
        "latency on other machines, not our CPU. Everything else is our process working.",
        "",
    ]
    for workload, breakdowns in results.profiles.items():
        chart = _profile_chart(out / f"profile_{workload.replace(' ', '_')}.png", breakdowns)
        lines += [f"### {workload}", "", f"![profile {workload}]({chart})", ""]
        for b in breakdowns:
            if b.samples and any(category.startswith("waiting for moto") for category, _ in b.shares):
                waiting = sum(
                    share for category, share in b.shares if category.startswith("waiting for moto")
                )
                top, top_share = max(
                    ((c, sh) for c, sh in b.shares if not c.startswith("waiting for moto")),
                    key=lambda item: item[1],
                    default=("-", 0.0),
                )
                lines.append(
                    f"- *{b.name}*: moto dominates {waiting:.0%} of the samples; the largest share of our "
                    f'own is "{top}" ({top_share:.0%}).'
                )
        for b in breakdowns:
            lines.append(
                f"- **{b.name}** ({b.samples} samples): " + "; ".join(f"{c} {s:.0%}" for c, s in b.shares)
            )
            if b.top_own_frames:
                lines.append(
                    "  - hottest frames (inclusive): "
                    + "; ".join(f"`{f}` {s:.0%}" for f, s in b.top_own_frames[:5])
                )
        lines.append("")
    return lines


def _costs(results: Results) -> list[str]:
    """The cost model for a national-scale default workload, with this run's listener CPU."""
    from .cost_model import Assumptions, Prices, Workload, render

    measured = [r.ours.cpu_per_1000 for r in throughput_rows(results) if r.label == "ct-500"]
    cpu = median(measured) if measured else Assumptions.listener_cpu_s_per_1000
    if math.isnan(cpu):
        cpu = Assumptions.listener_cpu_s_per_1000
    workload = Workload(studies_per_day=3000, study_mb=150, retention_years=12, retrievals_per_study=2)
    text = render(workload, Prices(), Assumptions(listener_cpu_s_per_1000=round(cpu, 1)))
    return [
        text.replace("## Cost model", "## Cost model (python -m bench.cost_model, defaults)", 1),
        f"The listener's CPU-seconds per 1,000 instances ({cpu:.1f}) are this run's median for the CT "
        "workload, measured against moto; see docs/benchmarks.md for every other assumption.",
        "",
    ]


def _method(results: Results) -> list[str]:
    return [
        "## How the run is set up",
        "",
        "- `make bench` runs `python -m bench`, which re-executes itself in a private network namespace "
        "(`unshare --net`, loopback only). Orthanc 1.10 cannot bind loopback only; inside the namespace "
        "every server (moto, our listener, Orthanc, movescu's receiver) is reachable only from the "
        "namespace, and all of them talk over the same 127.0.0.1.",
        "- Our archive is the local cloud (`local.cloud.LocalCloud`): moto server for S3/DynamoDB/SQS, "
        "the DICOM listener process, the index Lambda handler fed from SQS by an in-process poller.",
        "- Orthanc runs from the Debian package with its own config and storage folder, plugins off, "
        "TCP_NODELAY set, and its default SQLite index and file storage.",
        "- Figures are medians over the runs; ratios are ours / Orthanc; nothing is asserted.",
        "",
    ]
