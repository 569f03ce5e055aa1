"""A private network namespace for DICOM peers that cannot bind loopback only (DCMTK storescp).

Same construction as ``orthanc.py``: a namespace held open by a sleeping process, one end of a veth
pair inside it with a /30 address, the other end here. Peers started in it with ``nsenter`` listen
on "all interfaces" of that namespace only; the archive's listener reaches them at ``address`` as it
reaches any customer's PACS. Needs root (CAP_NET_ADMIN), as the tests here run.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

_links = itertools.count(1)


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


def wait_own_namespace(pid: str, timeout: float = 10.0) -> None:
    """Until process ``pid`` (started with ``unshare --net``) runs in its new network namespace: a
    veth moved to it earlier would land in ours."""
    ours = os.readlink("/proc/self/ns/net")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if os.readlink(f"/proc/{pid}/ns/net") != ours:
                return
        except FileNotFoundError:
            pass
        time.sleep(0.01)
    raise TimeoutError("the namespace holder did not enter its own network namespace")


@dataclass
class IsolatedHost:
    holder: subprocess.Popen[bytes] | None = None
    host_if: str = ""
    address: str = ""
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _logs: list[IO[bytes]] = field(default_factory=list)

    def start(self) -> IsolatedHost:
        link = (os.getpid() * 11 + next(_links)) % 250 + 1
        self.host_if, peer_if = f"nsh{link}", f"nso{link}"
        host_ip, self.address = f"10.232.{link}.1", f"10.232.{link}.2"
        self.holder = subprocess.Popen(
            ["unshare", "--net", "--", "sh", "-c", "ip link set lo up && exec sleep 3600"]
        )
        pid = str(self.holder.pid)
        wait_own_namespace(pid)
        _run("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", peer_if, "netns", pid)
        _run("ip", "addr", "add", f"{host_ip}/30", "dev", self.host_if)
        _run("ip", "link", "set", self.host_if, "up")
        _run("nsenter", "-t", pid, "-n", "ip", "addr", "add", f"{self.address}/30", "dev", peer_if)
        _run("nsenter", "-t", pid, "-n", "ip", "link", "set", peer_if, "up")
        return self

    def spawn(self, argv: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start ``argv`` inside the namespace, output to ``log``."""
        assert self.holder is not None
        out = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self._logs.append(out)
        process = subprocess.Popen(
            ["nsenter", "-t", str(self.holder.pid), "-n", "--", *argv],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "TCP_NODELAY": "1", **(env or {})},
        )
        self.processes.append(process)
        return process

    def run(self, argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
        assert self.holder is not None
        return subprocess.run(
            ["nsenter", "-t", str(self.holder.pid), "-n", "--", *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "TCP_NODELAY": "1"},
        )

    def wait_listening(self, port: int, timeout: float = 30.0) -> None:
        """Until something accepts TCP connections on ``port`` inside the namespace."""
        deadline = time.monotonic() + timeout
        probe = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=1).close()"
        while time.monotonic() < deadline:
            if self.run(["python3", "-c", probe], timeout=10).returncode == 0:
                return
            time.sleep(0.1)
        raise TimeoutError(f"nothing listening on port {port} in the namespace")

    def stop(self) -> None:
        for process in [*self.processes, self.holder]:
            if process is None or process.poll() is not None:
                continue
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        self.processes.clear()
        self.holder = None
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True, timeout=10, check=False)
        for log in self._logs:
            log.close()
        self._logs.clear()

    def __enter__(self) -> IsolatedHost:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
