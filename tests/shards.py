"""``make test`` runs the suite in shards at the same time, each in its own network namespace.

Most of the integration suite's wall time is waiting (queues drained by pollers, retries and their
backoff, peers' timeouts), not CPU: on the 2-core machines CI and we use, one serial run left the
cores idle most of the time. Each shard is a separate pytest process with its own local cloud,
started in a private network namespace (``unshare --net``) so that the fixed ports some tests use
(a demo PACS on 11113, DCMTK peers) never collide between shards. Test files stay whole in one
shard (their module fixtures store once); ``tests/unit`` and ``tests/infrastructure`` each go to one
shard whole (the infrastructure tests share their CDK syntheses). Files are spread by their
measured weight (``WEIGHTS``: seconds on a quiet 2-core machine; a file not listed counts as
``DEFAULT_WEIGHT``), heaviest first onto the lightest shard.

    python -m tests.shards [-n SHARDS] [pytest arguments...]

Without ``unshare`` (not root) the suite runs serially, as before. Each shard's output is printed
whole when the last one ends, with the slowest files of the run; the exit status is the worst.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_WEIGHT = 15.0
# Seconds per test file (or whole directory) with three shards on a 2-core machine, from the file
# timings this runner prints (update them when a file's time changes a lot).
WEIGHTS = {
    "tests/unit": 40.0,
    "tests/infrastructure": 90.0,
    "tests/integration/test_xds_rad69_volume.py": 158.0,
    "tests/integration/test_staging.py": 122.0,
    "tests/integration/test_storage_commitment.py": 116.0,
    "tests/integration/test_retrieve_large.py": 103.0,
    "tests/integration/test_destruction.py": 118.0,
    "tests/integration/test_retention.py": 98.0,
    "tests/integration/test_ian_delivery.py": 57.0,
    "tests/integration/test_hl7_fuzz.py": 46.0,
    "tests/integration/test_malformed_dicom.py": 44.0,
    "tests/integration/test_local_persistence.py": 43.0,
    "tests/integration/test_ingest.py": 42.0,
    "tests/integration/test_retention_death.py": 41.0,
    "tests/integration/test_retrieve_syntaxes.py": 40.0,
    "tests/integration/test_retrieve_robustness.py": 36.0,
    "tests/integration/test_listener_crash.py": 36.0,
    "tests/integration/test_corrections.py": 31.0,
    "tests/integration/test_storage_tiers.py": 30.0,
    "tests/integration/test_corrections_registration.py": 29.0,
    "tests/integration/test_index_and_admin.py": 27.0,
    "tests/integration/test_xds_interface.py": 23.0,
    "tests/integration/test_registration.py": 23.0,
    "tests/integration/test_association_robustness.py": 20.0,
    "tests/integration/test_query_retrieve.py": 19.0,
    "tests/integration/test_tls_dicom.py": 18.0,
    "tests/integration/test_tls_hl7.py": 18.0,
}


def units() -> list[str]:
    """What is handed out: the unit and infrastructure directories, and each integration file."""
    integration = sorted(
        p.relative_to(ROOT).as_posix() for p in (ROOT / "tests/integration").glob("test_*.py")
    )
    return ["tests/unit", "tests/infrastructure", *integration]


def plan(count: int, names: list[str]) -> list[list[str]]:
    """Heaviest first onto the lightest shard (greedy longest-processing-time)."""
    shards: list[list[str]] = [[] for _ in range(count)]
    loads = [0.0] * count
    for name in sorted(names, key=lambda n: (-WEIGHTS.get(n, DEFAULT_WEIGHT), n)):
        lightest = loads.index(min(loads))
        shards[lightest].append(name)
        loads[lightest] += WEIGHTS.get(name, DEFAULT_WEIGHT)
    return [sorted(s) for s in shards if s]


def can_unshare() -> bool:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    probe = subprocess.run(["unshare", "--net", "--", "true"], capture_output=True, check=False)
    return probe.returncode == 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.shards", description=__doc__)
    parser.add_argument("-n", "--shards", type=int, default=int(os.environ.get("TEST_SHARDS", "3")))
    args, pytest_args = parser.parse_known_args(argv)
    pytest = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-ra", *pytest_args]
    if args.shards <= 1 or not can_unshare():
        print("tests.shards: running serially (one shard, or no unshare here)", flush=True)
        return subprocess.call([*pytest, "--durations=15"], cwd=ROOT)
    # Files every shard's local cloud reads, made once before the shards race to create them.
    from local.demo_idp import ensure_demo_idp

    ensure_demo_idp()
    work = Path(tempfile.mkdtemp(prefix="archive-shards-"))
    shards = plan(args.shards, units())
    started = time.monotonic()
    running = []
    for index, paths in enumerate(shards):
        log = work / f"shard-{index}.log"
        timings = work / f"shard-{index}.json"
        command = [
            *pytest,
            f"--basetemp={work / f'tmp-{index}'}",
            "--durations=8",
            *paths,
        ]
        script = "ip link set lo up && exec " + " ".join(_quote(c) for c in command)
        env = {**os.environ, "ARCHIVE_TEST_TIMINGS": str(timings)}
        print(f"shard {index}: {' '.join(paths)}", flush=True)
        out = log.open("wb")
        process = subprocess.Popen(
            ["unshare", "--net", "--", "sh", "-c", script],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        running.append((index, process, log, timings, out))
    worst = 0
    for index, process, _, _, out in running:
        code = process.wait()
        out.close()
        worst = max(worst, code)
        print(f"shard {index} ended with {code} after {time.monotonic() - started:.0f} s", flush=True)
    files: dict[str, float] = {}
    for index, _, log, timings, _ in running:
        print(f"\n======== shard {index} ========", flush=True)
        sys.stdout.write(log.read_text(errors="replace"))
        if timings.exists():
            files.update(json.loads(timings.read_text()))
    print("\n======== slowest files (s) ========")
    for name, seconds in sorted(files.items(), key=lambda kv: -kv[1])[:25]:
        print(f"{seconds:8.1f}  {name}")
    print(f"\nall shards done in {time.monotonic() - started:.0f} s; exit {worst}", flush=True)
    shutil.rmtree(work, ignore_errors=True)
    return worst


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
