"""Where the time goes: py-spy samples of our processes, folded into a few named categories.

py-spy (PyPI) attaches to a running process by pid and samples its Python stacks; ``--format raw``
writes folded stacks ("frame;frame;... count"). Waiting threads are included (``--idle``) so that
time spent waiting for the AWS stand-in shows up as such.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# Leaf frames of a thread that is blocked, not running: socket reads, select/poll, lock waits, and
# pynetdicom's reactor loops, whose own line is a 1 ms time.sleep (C code, so it is the leaf).
WAIT_LEAVES = (
    "readinto",
    "recv_into",
    "select (",
    "poll (",
    "do_poll",
    "wait (",
    "accept (",
    "sleep",
    "run_reactor (",
    "service_actions (",
    "AssociationSocket.ready (",
    "_wait_for_tstate_lock",
)


def py_spy() -> str | None:
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


@dataclass
class Recording:
    name: str
    pid: int
    output: Path
    process: subprocess.Popen[bytes] | None = None

    def stop(self) -> None:
        """Stop sampling; py-spy writes its output on SIGINT."""
        if self.process is None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None


def start_recording(
    name: str, pid: int, output: Path, *, idle: bool, seconds: int = 3600, rate: int = 50
) -> Recording:
    """Record ``pid`` in the background until ``Recording.stop`` (or ``seconds``)."""
    exe = py_spy()
    recording = Recording(name, pid, output)
    if exe is None:
        return recording
    argv = [exe, "record", "--pid", str(pid), "--duration", str(seconds), "--rate", str(rate)]
    argv += ["--format", "raw", "--output", str(output), "--nonblocking"]
    if idle:
        argv.append("--idle")
    recording.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return recording


def read_folded(path: Path, *, only: str | None = None, active: bool = False) -> list[tuple[list[str], int]]:
    """Folded stacks from a raw py-spy file, optionally only those passing through ``only``, and
    with ``active`` only those not blocked (leaf not a socket read, select, poll, wait or sleep)."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        if only and only not in stack:
            continue
        frames = stack.split(";")
        if active and any(w in frames[-1] for w in WAIT_LEAVES):
            continue
        out.append((frames, int(count)))
    return out


Rule = tuple[str, Callable[[list[str]], bool]]


def _has(*needles: str) -> Callable[[list[str]], bool]:
    return lambda frames: any(n in f for f in frames for n in needles)


def _waiting_in(*needles: str) -> Callable[[list[str]], bool]:
    def rule(frames: list[str]) -> bool:
        return any(w in frames[-1] for w in WAIT_LEAVES) and _has(*needles)(frames)

    return rule


# C-STORE handler threads of the listener (stacks through DicomListener._on_store).
LISTENER_RULES: list[Rule] = [
    ("waiting for moto (S3 PUT/HEAD)", _waiting_in("ObjectStore")),
    ("waiting for moto (DynamoDB)", _waiting_in("pynamodb")),
    ("botocore client setup (no request yet)", _has("Connection.client", "create_client", "loaders.py")),
    ("botocore/urllib3 request CPU", _has("botocore", "urllib3", "pynamodb")),
    ("SHA-256 of the dataset", _has("sha256_of")),
    ("DICOM structure check and header parse", _has("check_structure", "read_header")),
    ("other (handler, logging)", lambda frames: True),
]
# The whole listener process, CPU only: which of its activities uses the CPU.
LISTENER_CPU_RULES: list[Rule] = [
    ("C-STORE handler", _has("_on_store")),
    ("storage commitment worker (re-evaluates pending transactions)", _has("CommitmentWorker")),
    ("C-FIND/C-MOVE/C-GET handlers", _has("query_retrieve")),
    ("pynetdicom: PDUs, DIMSE, association threads", _has("pynetdicom")),
    ("other", lambda frames: True),
]
# C-FIND handler threads of the listener (stacks through QueryRetrieveHandlers.on_find).
FIND_RULES: list[Rule] = [
    (
        "access record write (disclosure log, incl. its DynamoDB call)",
        _has("AccessLog.record", "_record (listeners"),
    ),
    (
        "waiting for moto (DynamoDB query/get)",
        lambda f: any(w in f[-1] for w in WAIT_LEAVES) and _has("pynamodb", "botocore")(f),
    ),
    ("botocore client setup (no request yet)", _has("Connection.client", "create_client", "loaders.py")),
    ("botocore/urllib3 request CPU", _has("botocore", "urllib3", "pynamodb")),
    ("matching and response building", _has("archive/services/query")),
    ("pynetdicom: encoding and sending responses", lambda frames: True),
]
# The listener during C-GET/C-MOVE, CPU only (running samples of every thread).
RETRIEVE_RULES: list[Rule] = [
    ("botocore/urllib3 request CPU (S3 GET, DynamoDB)", _has("botocore", "urllib3", "pynamodb")),
    ("preparing objects (header parse, coercion, re-encoding)", _has("_prepare", "transcode")),
    ("access and audit records", _has("AccessLog", "_record (listeners", "DicomAudit")),
    ("pynetdicom: encoding datasets, PDUs, association threads", _has("pynetdicom")),
    ("other", lambda frames: True),
]
# The local Lambda runner's index thread (stacks through QueuePoller._run).
LAMBDA_RULES: list[Rule] = [
    (
        "new botocore client per transaction (IndexRepository._connection)",
        _has("Connection.client", "create_client", "loaders.py"),
    ),
    ("waiting for moto (DynamoDB transaction)", _waiting_in("transact_write", "TransactWrite")),
    ("waiting for moto (S3 ranged GET)", _waiting_in("index_object")),
    ("waiting for moto (SQS delete)", _waiting_in("delete_message")),
    ("botocore/urllib3 request CPU", _has("botocore", "urllib3")),
    ("other (handler, parsing)", lambda frames: True),
]
# moto's own CPU (no idle samples): by the AWS service it emulates.
MOTO_RULES: list[Rule] = [
    ("DynamoDB TransactWriteItems", _has("transact_write_items")),
    (
        "DynamoDB Query/GetItem/BatchGet",
        _has("DynamoHandler.query", "DynamoHandler.get_item", "batch_get_item"),
    ),
    ("DynamoDB other", _has("moto/dynamodb")),
    ("S3", _has("moto/s3")),
    ("SQS", _has("moto/sqs")),
    (
        "HTTP server and request routing (cheroot or werkzeug, flask)",
        _has("cheroot", "werkzeug", "flask", "socketserver", "http/server"),
    ),
    ("other", lambda frames: True),
]


@dataclass
class Breakdown:
    name: str
    samples: int
    shares: list[tuple[str, float]] = field(default_factory=list)  # (category, fraction)
    top_own_frames: list[tuple[str, float]] = field(default_factory=list)


def breakdown(
    name: str,
    stacks: Sequence[tuple[list[str], int]],
    rules: Sequence[Rule],
    own_prefixes: Sequence[str] = (),
) -> Breakdown:
    counts: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for frames, count in stacks:
        total += count
        for category, rule in rules:
            if rule(frames):
                counts[category] += count
                break
        for frame in set(frames):
            if any(p in frame for p in own_prefixes):
                own[frame] += count
    result = Breakdown(name, total)
    if total:
        result.shares = [(c, counts[c] / total) for c, _ in rules if counts[c]]
        result.top_own_frames = [(f, n / total) for f, n in own.most_common(8)]
    return result
