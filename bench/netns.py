"""Run the whole benchmark inside a private network namespace.

Orthanc 1.10 and DCMTK's receivers cannot be told to bind loopback only. Inside a fresh network
namespace the only interface is a private loopback, so every server (moto, our listener, Orthanc,
the C-MOVE receivers) can listen anywhere and still be unreachable from outside, and all of them
reach each other on 127.0.0.1 over the same loopback: the same network path for both archives.
"""

from __future__ import annotations

import os
import shutil
import sys

MARKER = "BENCH_IN_PRIVATE_NETNS"


def in_private_namespace() -> bool:
    return os.environ.get(MARKER) == "1"


def reexec_in_private_namespace(argv: list[str]) -> None:
    """Replace this process with itself inside ``unshare --net`` (loopback up). Needs root or userns."""
    unshare = shutil.which("unshare")
    ip = shutil.which("ip")
    if unshare is None or ip is None:
        raise SystemExit("bench needs unshare (util-linux) and ip (iproute2): run `make system-deps`")
    command = " ".join(["exec", _quote(sys.executable), "-m", "bench", *map(_quote, argv)])
    script = f"{ip} link set lo up && {command}"
    env = {**os.environ, MARKER: "1"}
    prefix = [unshare, "--net"] if os.geteuid() == 0 else [unshare, "--net", "--map-root-user"]
    os.execvpe(prefix[0], [*prefix, "sh", "-c", script], env)


def _quote(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'"
