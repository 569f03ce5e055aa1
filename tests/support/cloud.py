"""Helpers over a running LocalCloud for integration tests: AWS clients, DICOM peers, waits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from botocore.exceptions import ClientError

from local.cloud import LocalCloud
from local.resources import BUCKET, STAGING_BUCKET, client

DCMTK = Path("/usr/bin")
T = TypeVar("T")


def dcmtk(
    tool: str, *args: str, timeout: float = 120, check: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run a DCMTK tool by full path (pynetdicom installs same-named apps into the venv)."""
    env = {**os.environ, "TCP_NODELAY": "1"}
    return subprocess.run(
        [str(DCMTK / tool), *args],
        capture_output=True,
        text=True,
        errors="replace",  # DCMTK prints values in their own character set
        timeout=timeout,
        env=env,
        check=check,
    )


def storescu(
    cloud: LocalCloud, files: list[Path] | list[str], *, aet: str = "DEMO_MOD", extra: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    return dcmtk(
        "storescu",
        "-v",
        "-aet",
        aet,
        "-aec",
        "ARCHIVE",
        *extra,
        "127.0.0.1",
        str(cloud.dicom_port),
        *map(str, files),
    )


def movescu(
    cloud: LocalCloud, aet: str, destination: str, study_uid: str
) -> subprocess.CompletedProcess[str]:
    """DCMTK movescu: move one study (Study Root) from the archive to ``destination``."""
    return dcmtk(
        "movescu", "-S", "-v", "-aet", aet, "-aec", "ARCHIVE", "-aem", destination,
        "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}",
        "127.0.0.1", str(cloud.dicom_port),
    )  # fmt: skip


def getscu(
    cloud: LocalCloud, aet: str, study_uid: str, outdir: Path, *, extra: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """DCMTK getscu: get one study (Study Root) from the archive into ``outdir``."""
    return dcmtk(
        "getscu", "-S", *extra, "-aet", aet, "-aec", "ARCHIVE", "-od", str(outdir),
        "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}",
        "127.0.0.1", str(cloud.dicom_port),
    )  # fmt: skip


def wait_until(predicate: Callable[[], T], timeout: float = 30.0, interval: float = 0.1) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def s3(cloud: LocalCloud) -> Any:
    return client("s3", cloud.endpoint)


def dynamodb(cloud: LocalCloud) -> Any:
    return client("dynamodb", cloud.endpoint)


class ListenerLog:
    """What a local-cloud process writes to its log from now on (``cloud`` must have a log_dir)."""

    def __init__(self, cloud: LocalCloud, name: str = "dicom") -> None:
        assert cloud.log_dir is not None
        self.path = cloud.log_dir / f"{name}.log"
        self.start = self.path.stat().st_size

    def text(self) -> str:
        with open(self.path, "rb") as fp:
            fp.seek(self.start)
            return fp.read().decode(errors="replace")


def admin_cli(cloud: LocalCloud, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The operator's CLI (``python -m admin``) against the local cloud, as an operator runs it."""
    return subprocess.run(
        [sys.executable, "-m", "admin", "--endpoint", cloud.endpoint, *args],
        capture_output=True,
        text=True,
        env=cloud.env(),
        timeout=timeout,
    )


def json_lines(text: str) -> list[Any]:
    """JSON Lines as the CLI prints them: split on newlines only (a value may hold U+2028 or NEL,
    which ``str.splitlines`` would also split on)."""
    return [json.loads(line) for line in text.split("\n") if line.strip()]


def admin_records(cloud: LocalCloud, *args: str) -> list[Any]:
    """The CLI's JSON Lines answer; fails the test when the command fails."""
    result = admin_cli(cloud, *args)
    assert result.returncode == 0, result.stderr
    return json_lines(result.stdout)


def _head_or_none(cloud: LocalCloud, bucket: str, key: str, **kwargs: Any) -> dict[str, Any] | None:
    try:
        return dict(s3(cloud).head_object(Bucket=bucket, Key=key, **kwargs))
    except ClientError:
        return None


def locked_copy(cloud: LocalCloud, key: str, timeout: float = 60.0, **kwargs: Any) -> dict[str, Any]:
    """HeadObject of ``key`` in the Object-Locked bucket, once the copier has put it there: a
    C-STORE is acknowledged from the staging tier (docs/storage.md, "Two tiers")."""
    return wait_until(lambda: _head_or_none(cloud, BUCKET, key, **kwargs), timeout=timeout)


def received(cloud: LocalCloud, key: str) -> bool:
    """True if the archive holds ``key`` in either tier (staged or locked)."""
    return any(_head_or_none(cloud, bucket, key) is not None for bucket in (STAGING_BUCKET, BUCKET))
