"""Orthanc (the Debian package) as the yardstick: its own config, storage folder and ports.

It runs in the benchmark's private network namespace (see ``bench.netns``), so binding every
interface exposes it to nothing but the namespace's loopback.
"""

from __future__ import annotations

import base64
import http.client
import json
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

ORTHANC = Path("/usr/sbin/Orthanc")


@dataclass
class Orthanc:
    work_dir: Path
    dicom_port: int
    http_port: int
    ae_title: str = "ORTHANC"
    # AE title -> (host, port): peers Orthanc may call (C-MOVE destinations, commitment requesters).
    modalities: dict[str, tuple[str, int]] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    def config(self) -> dict[str, Any]:
        storage = self.work_dir / "storage"
        return {
            "Name": "bench-orthanc",
            "StorageDirectory": str(storage),
            "IndexDirectory": str(storage),
            "StorageCompression": False,
            "Plugins": [],
            "HttpServerEnabled": True,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "OrthancExplorerEnabled": False,
            "HttpCompressionEnabled": False,
            "DicomServerEnabled": True,
            "DicomAet": self.ae_title,
            "DicomPort": self.dicom_port,
            "DicomCheckCalledAet": True,
            "DicomAlwaysAllowStore": True,
            "DicomScpTimeout": 60,
            "DicomScuTimeout": 60,
            "DicomModalities": {
                ae: {"AET": ae, "Host": host, "Port": port, "AllowStorageCommitment": True}
                for ae, (host, port) in self.modalities.items()
            },
            # No result caps: the query benchmark asks for whole answers on both sides.
            "LimitFindResults": 0,
            "LimitFindInstances": 0,
            "SaveJobs": False,
            "StableAge": 60,
            "LogLevel": "default",
        }

    def start(self) -> Orthanc:
        if self.work_dir.exists():
            shutil.rmtree(self.work_dir)
        self.work_dir.mkdir(parents=True)
        config = self.work_dir / "orthanc.json"
        config.write_text(json.dumps(self.config(), indent=2))
        self._log = open(self.work_dir / "orthanc.log", "wb")  # noqa: SIM115 - closed in stop()
        env = {"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"}
        self.process = subprocess.Popen(
            [str(ORTHANC), str(config)], stdout=self._log, stderr=subprocess.STDOUT, env=env
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.process.returncode}; see {self.work_dir}")
            try:
                self.get("/system")
                return self
            except OSError:
                time.sleep(0.1)
        raise TimeoutError("Orthanc did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
            self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def version(self) -> str:
        return str(self.get("/system").get("Version", "?"))

    # --- REST ------------------------------------------------------------------------------

    def _connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=120)

    def get(self, path: str) -> Any:
        conn = self._connection()
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            body = response.read()
            if response.status != 200:
                raise OSError(f"GET {path}: HTTP {response.status}")
            return json.loads(body)
        finally:
            conn.close()

    def statistics(self) -> dict[str, Any]:
        return dict(self.get("/statistics"))


class OrthancUploader:
    """Posts Part-10 bytes to Orthanc's REST API over one kept-alive connection."""

    def __init__(self, orthanc: Orthanc) -> None:
        self.orthanc = orthanc
        self.conn = orthanc._connection()
        self.auth = {"Authorization": "Basic " + base64.b64encode(b"bench:bench").decode()}

    def post_instance(self, data: bytes) -> None:
        try:
            response = self._post(data)
        except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
            # Orthanc closed the kept-alive connection between two requests: a new one, once.
            self.conn.close()
            self.conn = self.orthanc._connection()
            response = self._post(data)
        body = response.read()
        if response.status != 200:
            raise OSError(f"POST /instances: HTTP {response.status}: {body[:200]!r}")

    def _post(self, data: bytes) -> http.client.HTTPResponse:
        self.conn.request("POST", "/instances", body=data, headers={"Content-Type": "application/dicom"})
        return self.conn.getresponse()

    def close(self) -> None:
        self.conn.close()
