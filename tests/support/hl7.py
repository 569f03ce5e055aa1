"""HL7 helpers for the integration tests: the public test messages, an independent MLLP client
(simple-hl7 from npm), a raw-socket client for framing tests, and ACK reading."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from archive.data.patients import PatientRepository
from archive.model.identity import PatientIdentity

from local.cloud import ROOT, LocalCloud, free_port, wait_for_port
from tests.support.cloud import wait_until

# The steering repository's shared/testdata beside the clone; ARCHIVE_TESTDATA points elsewhere.
VECTORS = (
    Path(os.environ.get("ARCHIVE_TESTDATA") or Path(__file__).resolve().parents[3] / "shared" / "testdata")
    / "hl7"
)
PEER = Path(__file__).resolve().parents[1] / "integration" / "hl7_peer"
VT, FS, CR = b"\x0b", b"\x1c", b"\r"
# The demo organisation's temporary-ID issuer; the demo facility XYZ_RADIOLOGY maps ^^^ADT1 to it.
TEMP_ISSUER = "1.2.246.10.12345678.22.2026"
HETU_ISSUER = "1.2.246.21"


def vector(name: str, *, control_id: str | None = None, **replace: str) -> bytes:
    """A published test message, with identifiers replaced (so each test has its own patients).

    With replacements, MSH-10 is replaced too (by ``control_id`` or a fresh one): the archive applies
    a message once per sender and MSH-10, so the same control ID for other patients would be a resend.
    """
    data = (VECTORS / name).read_bytes()
    # Longest first: OLD_PID_1 and NEW_PID_1 contain PID_1.
    for old, new in sorted(replace.items(), key=lambda kv: -len(kv[0])):
        data = data.replace(f"|{old}^".encode(), f"|{new}^".encode())
    if replace or control_id:
        msh, rest = data.split(b"\r", 1)
        fields = msh.split(b"|")
        fields[9] = (control_id or uuid.uuid4().hex[:16]).encode()
        data = b"|".join(fields) + b"\r" + rest
    return data


def fresh_id(prefix: str = "T") -> str:
    return f"{prefix}{uuid.uuid4().hex[:12].upper()}"


def adt(
    event: str,
    patient_id: str,
    *,
    authority: str = "ADT1",
    name: str = "Testinen^Matti",
    prior_id: str | None = None,
    prior_authority: str | None = None,
    control_id: str | None = None,
    charset: str = "",
    facility: str = "XYZ_RADIOLOGY",
    structure: str = "",
    encoding: str = "ascii",
) -> bytes:
    """An ADT message in the shape of the published samples; ``authority`` is PID-3.4 as sent."""
    control_id = control_id or uuid.uuid4().hex[:16]
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    message_type = "^".join(p for p in ("ADT", event, structure) if p)
    segments = [
        f"MSH|^~\\&|TEST_PAS|{facility}|ARCHIVE|NATIONAL|{stamp}||{message_type}|{control_id}|P|2.5.1||||||{charset}",
        f"EVN||{stamp}",
        f"PID|||{patient_id}^^^{authority}||{name}||19160502|M",
    ]
    if prior_id is not None:
        segments.append(f"MRG|{prior_id}^^^{prior_authority or authority}")
    return ("\r".join(segments) + "\r").encode(encoding)


@dataclass(frozen=True)
class Ack:
    code: str  # MSA-1
    control_id: str  # MSA-2
    error: str | None  # ERR-3.1
    location: str | None  # ERR-2
    text: str

    @classmethod
    def parse(cls, text: str) -> Ack:
        segments = {s.split("|", 1)[0]: s.split("|") for s in text.replace("\n", "\r").split("\r") if s}
        assert "MSH" in segments and "MSA" in segments, text
        msa = segments["MSA"]
        err = segments.get("ERR")
        return cls(
            code=msa[1],
            control_id=msa[2] if len(msa) > 2 else "",
            error=err[3].split("^")[0] if err and len(err) > 3 else None,
            location=err[2] if err and len(err) > 2 and err[2] else None,
            text=text,
        )


def ensure_peer() -> None:
    """Install simple-hl7 (pinned by the lock file) once, with npm."""
    if (PEER / "node_modules" / "simple-hl7").is_dir():
        return
    npm = shutil.which("npm")
    assert npm, "npm is needed for the simple-hl7 test peer"
    subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=PEER, check=True, timeout=300
    )


def simple_hl7_send(cloud: LocalCloud, messages: list[bytes], workdir: Path) -> list[Ack]:
    """Send the messages with simple-hl7 over one connection; their ACKs, in order."""
    ensure_peer()
    files = []
    for number, message in enumerate(messages):
        path = workdir / f"message-{number}.hl7"
        path.write_bytes(message)
        files.append(str(path))
    result = subprocess.run(
        ["node", str(PEER / "send.js"), "127.0.0.1", str(cloud.hl7_port), *files],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    acks = [Ack.parse(json.loads(line)) for line in result.stdout.splitlines() if line.strip()]
    assert len(acks) == len(messages), result.stdout
    return acks


def frame(message: bytes) -> bytes:
    return VT + message + FS + CR


def read_frames(sock: socket.socket, count: int) -> list[bytes]:
    """Read ``count`` MLLP frames (or fewer if the peer closes)."""
    buffer = b""
    frames: list[bytes] = []
    while len(frames) < count:
        chunk = sock.recv(65536)
        if not chunk:
            break
        buffer += chunk
        while FS + CR in buffer:
            block, buffer = buffer.split(FS + CR, 1)
            frames.append(block[block.index(VT) + 1 :])
    return frames


def connect(port: int, timeout: float = 30.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def exchange(port: int, data: bytes | list[bytes], expect: int) -> list[Ack]:
    """Write raw bytes (chunks sent one by one) on one connection; read ``expect`` ACKs."""
    with connect(port) as sock:
        for chunk in data if isinstance(data, list) else [data]:
            sock.sendall(chunk)
        return [Ack.parse(f.decode("latin-1")) for f in read_frames(sock, expect)]


def wait_for_change(cloud: LocalCloud, identity: PatientIdentity, control_id: str) -> dict[str, object]:
    """Wait until the patient_update Lambda has handled the message (its history item exists)."""
    assert cloud.settings is not None
    repository = PatientRepository(cloud.settings)

    def handled() -> dict[str, object] | None:
        return next(
            (h for h in repository.history(identity.key) if h["message_control_id"] == control_id), None
        )

    return wait_until(handled, timeout=120)


@contextmanager
def separate_listener(cloud: LocalCloud, **env: str) -> Iterator[int]:
    """A second HL7 listener process on the same local cloud, with its own settings; its port."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "listeners.hl7"],
        cwd=ROOT,
        env={
            **cloud.env(),
            "HL7_HOST": "127.0.0.1",
            "HL7_PORT": str(port),
            "PATIENT_UPDATE_QUEUE_URL": cloud.queues["patient-updates"].url,
            **env,
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port("127.0.0.1", port, process=process)
        yield port
    finally:
        process.terminate()
        process.wait(15)
