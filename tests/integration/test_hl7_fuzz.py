"""Malformed HL7 over real MLLP (issue 15): the archive's own corpus, then a seeded, bounded fuzz pass.

For every message: an ACK comes back on the same connection and parses (in the sender's delimiters
when they were valid, else in the standard ones); it is never AE 207 (the "internal error; please
retry" that makes a sender resend forever); the listener logs no traceback. For every AA: the change
is applied later (its once-only marker exists) and nothing lands in the dead-letter queue.

The fuzz pass is seeded (``HL7_FUZZ_SEED``, default fixed) and bounded by count and time
(``HL7_FUZZ_MESSAGES``, ``HL7_FUZZ_SECONDS``). The counts of ACK codes per class are printed
(``pytest -s``) and written to ``hl7-fuzz-counts.json`` in the test's temporary directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

import hl7
import pytest
from archive.data.patients import PatientRepository
from archive.hl7.message import parse_header

from listeners.hl7.server import peek_header
from local.cloud import LocalCloud
from local.resources import client
from tests.support.cloud import wait_until
from tests.support.hl7 import HETU_ISSUER, Ack, adt, connect, frame, fresh_id, read_frames

CORPUS = Path(__file__).resolve().parents[1] / "data" / "hl7-corpus"
SEED = int(os.environ.get("HL7_FUZZ_SEED", "20261130"))
MAX_MESSAGES = int(os.environ.get("HL7_FUZZ_MESSAGES", "600"))
MAX_SECONDS = float(os.environ.get("HL7_FUZZ_SECONDS", "40"))
STANDARD = "MSH|^~\\&|"


class Exchange:
    """One MLLP connection: send a message, read its ACK; reconnect if the listener closed it."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._sock = connect(port)

    def send(self, payload: bytes) -> str:
        self._sock.sendall(frame(payload))
        frames = read_frames(self._sock, 1)
        if not frames:
            raise AssertionError(f"no ACK for {payload[:120]!r}")
        return frames[0].decode("latin-1")

    def close(self) -> None:
        self._sock.close()


def message_id(payload: bytes) -> str:
    """Sender + MSH-10 of an accepted message, as the archive keys it."""
    header = parse_header(payload.decode("latin-1").replace("\r\n", "\r").replace("\n", "\r").lstrip())
    return hashlib.sha256(f"{header.sender}\x00{header.control_id}".encode()).hexdigest()


def check_ack(payload: bytes, text: str) -> Ack:
    """The properties every ACK must have, whatever was sent."""
    ack = Ack.parse(text.replace(text[3], "|") if peek_header(payload) is not None else text)
    sent = peek_header(payload)
    if sent is None:
        assert text.startswith(STANDARD), text  # corrupt MSH-1/2: answered in the standard delimiters
    else:
        assert text[3:8] == sent.field_separator + sent.encoding_characters, text
    parsed = hl7.parse(text)
    assert str(parsed.segment("MSA")[1]) == ack.code
    assert ack.code in ("AA", "AE", "AR"), text
    assert (ack.code, ack.error) != ("AE", "207"), text
    assert "please retry" not in text, text  # the unexpected-exception diagnostic (listeners/hl7/server.py)
    return ack


def listener_log(cloud: LocalCloud) -> Path:
    assert cloud.log_dir is not None
    return cloud.log_dir / "hl7.log"


def run(
    cloud: LocalCloud, messages: list[tuple[str, bytes]], *, deadline: float | None = None
) -> tuple[dict[str, Counter[str]], list[bytes], list[tuple[str, bytes, Ack]]]:
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    accepted: list[bytes] = []
    answered: list[tuple[str, bytes, Ack]] = []
    exchange = Exchange(cloud.hl7_port)
    try:
        for cls, payload in messages:
            if deadline is not None and time.monotonic() > deadline:
                break
            ack = check_ack(payload, exchange.send(payload))
            counts[cls][f"{ack.code} {ack.error or ''}".strip()] += 1
            answered.append((cls, payload, ack))
            if ack.code == "AA":
                accepted.append(payload)
    finally:
        exchange.close()
    return counts, accepted, answered


def assert_applied_and_no_dlq(cloud: LocalCloud, accepted: list[bytes]) -> None:
    assert cloud.settings is not None
    cloud.drain(timeout=300)
    repository = PatientRepository(cloud.settings)
    missing = [p[:80] for p in accepted if not repository.message_handled(message_id(p))]
    assert not missing, f"{len(missing)} AA'd messages never applied: {missing[:5]}"
    dlq = client("sqs", cloud.endpoint).get_queue_attributes(
        QueueUrl=cloud.queues["patient-updates"].dlq_url, AttributeNames=["ApproximateNumberOfMessages"]
    )
    assert dlq["Attributes"]["ApproximateNumberOfMessages"] == "0"


def no_new_traceback(cloud: LocalCloud, offset: int) -> None:
    log = listener_log(cloud).read_bytes()[offset:]
    assert b"Traceback" not in log, log[log.find(b"Traceback") - 200 :][:3000].decode("latin-1")


# --- the corpus -------------------------------------------------------------------------------


def test_the_corpus_gets_its_expected_acks(cloud: LocalCloud, tmp_path: Path) -> None:
    # Given the archive's malformed-input corpus (one file per case, the expected ACK in expected.json)
    expected = json.loads((CORPUS / "expected.json").read_text())
    messages = [(name, (CORPUS / f"{name}.hl7").read_bytes()) for name in sorted(expected)]
    offset = listener_log(cloud).stat().st_size
    # When each is sent over MLLP
    _, accepted, answered = run(cloud, messages)
    # Then each gets exactly its expected ACK code and HL7 error code
    got = {name: [ack.code, ack.error] for name, _, ack in answered}
    assert got == {name: case["expect"] for name, case in expected.items()}
    # And the accepted ones are applied, nothing reaches the DLQ, the listener logged no traceback
    assert_applied_and_no_dlq(cloud, accepted)
    no_new_traceback(cloud, offset)
    by_class: dict[str, Counter[str]] = defaultdict(Counter)
    for name, _, ack in answered:
        by_class[expected[name]["class"]][f"{ack.code} {ack.error or ''}".strip()] += 1
    report(tmp_path, "corpus", by_class)


# --- the fuzz pass ----------------------------------------------------------------------------

Mutation = Callable[[random.Random, bytes], bytes]


def seeds(rng: random.Random) -> list[bytes]:
    """Valid messages of every event the archive takes, each with fresh IDs and control ID."""
    hetu = f"&{HETU_ISSUER}&ISO"
    pid, prior = fresh_id("F"), fresh_id("F")
    control = uuid.UUID(int=rng.getrandbits(128)).hex[:16]
    return [
        adt("A31", pid, control_id=control),
        adt("A08", pid, name="Äärelä^Åsa", charset="8859/1", encoding="latin-1", control_id=control),
        adt("A40", fresh_id("F"), prior_id=prior, control_id=control),
        adt("A47", fresh_id("F"), prior_id=prior, control_id=control),
        adt("A31", f"0101{rng.randint(10, 99)}A9{rng.randint(100, 999)}", authority=hetu, control_id=control),
    ]


def _fields(message: bytes) -> list[list[bytes]]:
    return [segment.split(b"|") for segment in message.split(b"\r") if segment]


def _join(segments: list[list[bytes]]) -> bytes:
    return b"\r".join(b"|".join(s) for s in segments) + b"\r"


def _pid(segments: list[list[bytes]]) -> list[bytes]:
    return next(s for s in segments if s[0] == b"PID")


def byte_flip(rng: random.Random, message: bytes) -> bytes:
    data = bytearray(message)
    for _ in range(rng.randint(1, 3)):
        data[rng.randrange(len(data))] = rng.randrange(256)
    return bytes(data)


def truncate(rng: random.Random, message: bytes) -> bytes:
    return message[: rng.randrange(1, len(message))]


def blank_segments(rng: random.Random, message: bytes) -> bytes:
    parts = message.split(b"\r")
    at = rng.randrange(1, len(parts))
    parts.insert(at, rng.choice([b"", b"", b"   ", b"\t"]))
    return b"\r".join(parts) + rng.choice([b"", b"\r", b"\r\r"])


ESCAPES = [b"\\XZZ\\", b"\\X00\\", b"\\XD800\\", b"\\XC3A4\\", b"\\X4\\", b"\\", b"\\Q\\", b"\\C2842\\",
           b"\\M2442\\", b"\\Zx\\", b"\\.br\\", b"\\X0D\\", b"\\F\\", b"\\S\\", b"\\T\\", b"\\R\\", b"\\E\\",
           b"\\H\\", b"\\N\\", b"\\X41\\", b"\\XC4\\"]  # fmt: skip


def escape(rng: random.Random, message: bytes) -> bytes:
    segments = _fields(message)
    pid = _pid(segments)
    field = rng.choice([3, 5, 5, 7, 8])
    while len(pid) <= field:
        pid.append(b"")
    value = pid[field]
    at = rng.randrange(len(value) + 1)
    pid[field] = value[:at] + rng.choice(ESCAPES) + value[at:]
    return _join(segments)


def long_field(rng: random.Random, message: bytes) -> bytes:
    segments = _fields(message)
    pid = _pid(segments)
    field = rng.choice([3, 5, 5, 7])
    size = rng.choice([63, 64, 65, 200, 5_000, 100_000, 250_000])
    pid[field] = rng.choice([b"9", b"N", b"\xc4"]) * size + (b"^^^ADT1" if field == 3 else b"")
    return _join(segments)


def delimiters(rng: random.Random, message: bytes) -> bytes:
    pool = b"|^~\\&#A1 \x00\r\t\xff"
    head = bytes(rng.choice(pool) for _ in range(rng.choice([4, 5, 6])))
    return b"MSH" + head + message[8:]


AUTHORITIES = [b"&1.2.246.21&L", b"&1.2.246.21&", b"&1.2.246.21&ISO", b"&&ISO", b"&1.2.3.4&ISO", b"ADT1",
               b"NOPE", b"", b"&1..2&ISO", b"&" + b"1." * 40 + b"1&ISO", b"ADT1&1.2.246.21&ISO",
               b"&1.2.246.10.12345678.22.2026&iso"]  # fmt: skip


def authority(rng: random.Random, message: bytes) -> bytes:
    segments = _fields(message)
    target = rng.choice([s for s in segments if s[0] in (b"PID", b"MRG")])
    field = 3 if target[0] == b"PID" else 1
    cx = (target[field].split(b"~")[0].split(b"^") + [b""] * 4)[:4]
    cx[3] = rng.choice(AUTHORITIES)
    target[field] = b"^".join(cx)
    return _join(segments)


def charset(rng: random.Random, message: bytes) -> bytes:
    segments = _fields(message)
    msh = segments[0]
    while len(msh) < 18:
        msh.append(b"")
    msh[17] = rng.choice(
        [b"", b"ASCII", b"8859/1", b"UNICODE UTF-8", b"8859/15", b"UNICODE", b"GB 18030-2000"]
    )
    name = rng.choice(["Äärelä^Åsa", "Ωmega^Ψ", "Plain^Name", "Ääri\u0085^Åke"])
    _pid(segments)[5] = name.encode(rng.choice(["latin-1", "utf-8"]), "replace")
    return _join(segments)


def control_chars(rng: random.Random, message: bytes) -> bytes:
    segments = _fields(message)
    pid = _pid(segments)
    field = rng.choice([3, 5, 7, 8])
    while len(pid) <= field:
        pid.append(b"")
    char = bytes([rng.choice([0, 1, 7, 8, 9, 10, 12, 27, 31, 127])])
    at = rng.randrange(len(pid[field]) + 1)
    pid[field] = pid[field][:at] + char + pid[field][at:]
    return _join(segments)


def segments_shuffle(rng: random.Random, message: bytes) -> bytes:
    parts = [p for p in message.split(b"\r") if p]
    choice = rng.randrange(5)
    if choice == 0 and len(parts) > 1:
        parts.insert(rng.randrange(1, len(parts) + 1), rng.choice(parts[1:]))  # a segment twice
    elif choice == 1 and len(parts) > 1:
        del parts[rng.randrange(1, len(parts))]
    elif choice == 2:
        rest = parts[1:]
        rng.shuffle(rest)
        parts = [parts[0], *rest]
    elif choice == 3:
        at = rng.randrange(1, len(parts)) if len(parts) > 1 else 0
        parts[at] = parts[at][:3].lower() + parts[at][3:]
    else:
        parts.insert(rng.randrange(1, len(parts) + 1), rng.choice([b"ZZZ|1|2", b"XY", b"PID", b"MRG|"]))
    return b"\r".join(parts) + b"\r"


def message_type(rng: random.Random, message: bytes) -> bytes:
    segments = _fields(message)
    segments[0][8] = rng.choice([b"ADT^A01", b"ORM^O01", b"ADT", b"", b"^A40", b"ADT^A40^ADT_A39^X", b"adt^a31",
                                 b"ADT^A31~ADT^A40", b"ACK^A31"])  # fmt: skip
    return _join(segments)


MUTATIONS: dict[str, Mutation] = {
    "byte-flip": byte_flip,
    "truncate": truncate,
    "blank-segments": blank_segments,
    "escape": escape,
    "long-field": long_field,
    "delimiters": delimiters,
    "authority": authority,
    "charset": charset,
    "control-chars": control_chars,
    "segments": segments_shuffle,
    "message-type": message_type,
}


def fuzz_messages(rng: random.Random, count: int) -> list[tuple[str, bytes]]:
    out = []
    for _ in range(count):
        cls = rng.choice(sorted(MUTATIONS))
        seed = rng.choice(seeds(rng))
        mutated = MUTATIONS[cls](rng, seed)
        # MLLP's own start and end bytes inside a payload are framing tests (test_hl7_mllp), not these.
        out.append((cls, mutated.replace(b"\x0b", b" ").replace(b"\x1c", b" ")))
    return out


def test_a_seeded_bounded_fuzz_pass_finds_no_internal_error(cloud: LocalCloud, tmp_path: Path) -> None:
    # Given seeded mutations of valid A31, A08, A40, A47 messages, eleven classes of them
    rng = random.Random(SEED)
    messages = fuzz_messages(rng, MAX_MESSAGES)
    offset = listener_log(cloud).stat().st_size
    # When they are sent over MLLP, one after the other, within the time budget
    counts, accepted, answered = run(cloud, messages, deadline=time.monotonic() + MAX_SECONDS)
    # Then every one was answered with a well-formed ACK that is not AE 207 (checked per message),
    # every AA is applied, nothing reached the dead-letter queue, and no traceback was logged
    assert len(answered) >= min(100, MAX_MESSAGES), f"only {len(answered)} sent within {MAX_SECONDS}s"
    assert_applied_and_no_dlq(cloud, accepted)
    no_new_traceback(cloud, offset)
    # And the pass exercised both outcomes (a pass that refused everything would prove little)
    totals = sum(counts.values(), Counter())
    assert totals["AA"] > 0 and sum(v for k, v in totals.items() if k != "AA") > 0, totals
    report(tmp_path, f"fuzz (seed {SEED}, {len(answered)} messages)", counts)


def report(tmp_path: Path, title: str, counts: dict[str, Counter[str]]) -> None:
    lines = [f"HL7 {title}: ACK codes per class"]
    for cls in sorted(counts):
        lines.append(f"  {cls:<22} " + ", ".join(f"{k}: {v}" for k, v in sorted(counts[cls].items())))
    print("\n".join(lines))
    (tmp_path / "hl7-fuzz-counts.json").write_text(json.dumps({title: counts}, indent=1, sort_keys=True))


@pytest.fixture(autouse=True)
def _wait_for_listener_log(cloud: LocalCloud) -> None:
    wait_until(lambda: listener_log(cloud).exists(), timeout=30)
