"""The benchmark report: every figure in both modes beside Orthanc, and the examined-vs-returned verdict."""

from __future__ import annotations

from pathlib import Path

from bench.commitment import CommitmentOutcome
from bench.ingest import IngestSample
from bench.measure import Usage
from bench.query import QueryLatency
from bench.report import Results, view, write_report
from bench.retrieve import RetrieveSample

USAGE = Usage(cpu_seconds=2.0, peak_rss_bytes=100_000_000, wall_seconds=4.0)


def _ingest(system: str, seconds: float, kind: str = "throughput") -> IngestSample:
    commitment = CommitmentOutcome(1, 100, 0, seconds / 2, True) if kind == "commitment" else None
    return IngestSample(system, "ct-500", 1, 0, kind, 100, 50_000_000, seconds, 0, USAGE, {}, commitment)


def _find(system: str, p50: float, studies: int, examined: int = -1, returned: int = -1) -> QueryLatency:
    reads = {
        "Query archive-studies/by_accession": {"requests": 10, "scanned": examined, "returned": returned}
    }
    return QueryLatency(
        system,
        "AccessionNumber",
        10,
        1.0,
        p50,
        p50 * 2,
        p50,
        0,
        studies=studies,
        examined=examined,
        returned=returned,
        worst_excess=max(0, examined - returned) if examined >= 0 else -1,
        reads=reads if examined >= 0 else {},
    )


def _results() -> Results:
    results = Results(started="2026-11-30T08:00:00+00:00", load_before="1 / 1 / 1", load_after="1 / 1 / 1")
    results.workloads = {"ct-500": "100 CT images"}
    results.load_samples = [1.0, 2.0]
    # ours 10 s locally, 4 s under the AWS profile (hypothetical), Orthanc 1 s: 0.1x and 0.25x.
    results.ingest = [_ingest("ours", 10.0), _ingest("ours-aws", 4.0), _ingest("orthanc", 1.0)]
    results.ingest += [_ingest(s, 2.0, "commitment") for s in ("ours", "ours-aws", "orthanc")]
    results.retrieve = [
        RetrieveSample(s, "C-GET", 0, 100, 50_000_000, secs, 100, 0, USAGE)
        for s, secs in (("ours", 5.0), ("ours-aws", 8.0), ("orthanc", 0.5))
    ]
    results.query = [
        _find("ours", 40.0, 10_000, 10, 10),
        _find("ours-aws", 20.0, 10_000, 10, 10),
        _find("orthanc", 10.0, 10_000),
        _find("ours", 400.0, 100_000, 10, 10),
        _find("ours-aws", 410.0, 100_000, 13, 10),
    ]
    return results


def test_a_mode_view_names_its_samples_ours_and_keeps_orthanc() -> None:
    aws = view(_results(), "aws")
    assert {s.system for s in aws.ingest} == {"ours", "orthanc"}
    assert [s.seconds for s in aws.ingest if s.system == "ours" and s.kind == "throughput"] == [4.0]
    assert {q.studies for q in aws.query} == {10_000}


def test_the_report_has_both_modes_as_ratios_and_flags_excess_reads(tmp_path: Path) -> None:
    report = write_report(_results(), tmp_path).read_text()
    headline = report.split("## Headline", 1)[1].split("\n## ", 1)[0]
    ingest = next(line for line in headline.splitlines() if line.startswith("| ingest ct-500, 1 assoc"))
    assert "**0.10x**" in ingest
    assert "**0.25x**" in ingest
    assert (
        "| figure | ours, local | ours, aws | Orthanc | ours local / Orthanc | ours aws / Orthanc |"
        in headline
    )
    assert "## Mode: ours on the local stand-in" in report
    assert "## Mode: ours on the AWS latency profile" in report
    assert "by AccessionNumber at 100,000 (ours-aws): 13 vs 10" in report
    for chart in (
        "both/headline_ratios.png",
        "local/retrieve.png",
        "aws/retrieve.png",
        "both/cfind_scaling_p50.png",
    ):
        assert f"]({chart})" in report
        assert (tmp_path / chart).stat().st_size > 0


def test_the_report_says_what_did_not_complete_and_shows_iti18_beside_c_find(tmp_path: Path) -> None:
    # Given a run whose 100,000-study FindDocuments ran out of its budget after 2 of 5 queries,
    # whose ours-aws commitment got no report, and which dropped a throughput backlog
    results = _results()
    results.ingest[-2] = IngestSample(
        "ours-aws", "ct-500", 1, 0, "commitment", 100, 50_000_000, 2.0, 0, USAGE, {},
        CommitmentOutcome(0, 0, 0, 540.0, False),
    )  # fmt: skip
    iti18 = _find("ours", 900.0, 100_000, 4, 4)
    results.query.append(
        QueryLatency(**{**iti18.__dict__, "kind": "ITI-18 FindDocuments", "queries": 2, "planned": 5})
    )
    results.failures = ["ours ITI-18 FindDocuments at 100,000 studies: 2 of 5 queries measured"]
    results.dropped_backlog = {"ct-500": {"lock queue messages": 4000, "staged copies": 4000}}
    results.phase_seconds = {"ingest": 600.0, "query": 1200.0}
    # When the report is written
    report = write_report(results, tmp_path).read_text()
    # Then its first section lists the failure, the unreported commitment and the phase times
    outcome = report.split("## How the run went", 1)[1].split("\n## ", 1)[0]
    assert "**Not everything completed.**" in outcome
    assert "- ours ITI-18 FindDocuments at 100,000 studies: 2 of 5 queries measured" in outcome
    assert "ours-aws ct-500 (event type 0, 0 failed, after 540 s)" in outcome
    assert "ingest 10.0 min, query 20.0 min" in outcome
    assert "4,000 lock queue messages, 4,000 staged copies" in outcome
    # And ITI-18 has its own row in the examined-vs-returned table, labelled apart from C-FIND
    scaling = report.split("## Queries as the index grows", 1)[1].split("\n## ", 1)[0]
    assert "| ITI-18 FindDocuments | 100,000 | local | 2 |" in scaling
    assert "| C-FIND by AccessionNumber | 100,000 | aws |" in scaling


def test_a_query_tally_counts_examined_against_returned_and_failures() -> None:
    from bench.query import QueryTally

    counters = iter(
        [
            {"reads": {}},  # reset before the first query
            {"reads": {"Query studies/by_patient": {"requests": 1, "scanned": 4, "returned": 4}}},
            {"reads": {}},
            {"reads": {"Query studies/by_patient": {"requests": 2, "scanned": 7, "returned": 5}}},
        ]
    )
    tally = QueryTally(lambda: next(counters))
    tally.before()
    tally.add(0.010, found=4, ok=True)
    tally.before()
    tally.add(0.030, found=0, ok=True)  # no match counts as a failure
    result = tally.result("ours", "PatientID", studies=10, planned=3)
    assert (result.queries, result.failures, result.planned, result.studies) == (2, 1, 3, 10)
    assert (result.examined, result.returned, result.worst_excess) == (11, 9, 2)
    assert result.reads == {"Query studies/by_patient": {"requests": 3, "scanned": 11, "returned": 9}}
    assert result.matches_per_query == 2.0 and result.mean_ms == 20.0
    untallied = QueryTally(None)
    untallied.add(0.005, found=1, ok=False)
    assert (untallied.result("orthanc", "PatientID", studies=0, planned=1).examined, untallied.failures) == (
        -1,
        1,
    )
