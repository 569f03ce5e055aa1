"""Orthanc (Debian package) as a real peer, isolated in its own network namespace.

Orthanc 1.10 cannot be told to bind loopback only, so it runs under ``unshare --net`` where its
"all interfaces" are a private loopback plus one end of a veth pair; the other end stays in the
host namespace with a /30 link address. Only this machine reaches it (veth is point-to-point and
attached to nothing else), the archive's listener connects to it as to any customer PACS, and it
disappears with its namespace when the process ends. Needs root (CAP_NET_ADMIN), as the tests here run.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.netns import wait_own_namespace

ORTHANC = "/usr/sbin/Orthanc"
DICOM_PORT = 4242
HTTP_PORT = 8042
_links = itertools.count(1)


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


@dataclass
class Orthanc:
    workdir: Path
    ae_title: str = "ORTHANC"
    process: subprocess.Popen[bytes] | None = None
    host_if: str = ""
    address: str = ""
    _log: Any = field(default=None, repr=False)

    @property
    def http(self) -> str:
        return f"http://{self.address}:{HTTP_PORT}"

    def start(self) -> Orthanc:
        link = (os.getpid() * 7 + next(_links)) % 250 + 1
        self.host_if, peer_if = f"qrh{link}", f"qro{link}"
        host_ip, self.address = f"10.231.{link}.1", f"10.231.{link}.2"
        storage = self.workdir / "orthanc-storage"
        storage.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "orthanc.json"
        config.write_text(
            json.dumps(
                {
                    "Name": "qr-test-orthanc",
                    "StorageDirectory": str(storage),
                    "IndexDirectory": str(storage),
                    "DicomAet": self.ae_title,
                    "DicomPort": DICOM_PORT,
                    "HttpPort": HTTP_PORT,
                    "RemoteAccessAllowed": True,
                    "AuthenticationEnabled": False,
                    "DicomCheckCalledAet": False,
                    "DicomAlwaysAllowStore": True,
                    "Plugins": [],
                    "StableAge": 1,
                }
            )
        )
        self._log = open(self.workdir / "orthanc.log", "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            ["unshare", "--net", "--", "sh", "-c", f'ip link set lo up && exec {ORTHANC} "{config}"'],
            env={**os.environ, "TCP_NODELAY": "1"},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        pid = str(self.process.pid)
        wait_own_namespace(pid)
        _run("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", peer_if, "netns", pid)
        _run("ip", "addr", "add", f"{host_ip}/30", "dev", self.host_if)
        _run("ip", "link", "set", self.host_if, "up")
        _run("nsenter", "-t", pid, "-n", "ip", "addr", "add", f"{self.address}/30", "dev", peer_if)
        _run("nsenter", "-t", pid, "-n", "ip", "link", "set", peer_if, "up")
        self._wait()
        return self

    def _wait(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"Orthanc exited with {self.process.returncode}; see {self.workdir}/orthanc.log"
                )
            try:
                self.get("/system")
                return
            except OSError:
                time.sleep(0.2)
        raise TimeoutError("Orthanc did not answer")

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.http}{path}", timeout=10) as response:
            body = response.read()
        return json.loads(body) if response.headers.get_content_type() == "application/json" else body

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
            self.process = None
        # The veth pair goes with the namespace; remove the host end in case it lingers.
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True, timeout=10, check=False)
        if self._log is not None:
            self._log.close()

    def __enter__(self) -> Orthanc:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
