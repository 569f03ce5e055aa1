"""Fixtures shared by every suite. The integration suites run against one LocalCloud per session:
moto in its own process, the DICOM listener in its own process, the Lambda handlers fed from SQS.
Tests keep out of each other's way by using fresh UIDs and patient IDs, not by resetting state.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from local.cloud import LocalCloud, free_port


@pytest.fixture(scope="session")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCloud]:
    logs = tmp_path_factory.mktemp("cloud-logs")
    instance = LocalCloud(
        dicom_port=free_port(),
        log_dir=logs,
        tls_dir=tmp_path_factory.mktemp("cloud-tls"),
        settings_overrides={
            "commitment_wait_seconds": 8.0,
            "commitment_retry_base_seconds": 0.5,
            # Gives a report up after 0.5 + 1 + 2 s of retries, so UNDELIVERABLE is testable quickly.
            "commitment_max_attempts": 4,
            # Objects whose retention ended already are locked this long (tests/integration/test_destruction.py).
            "minimum_lock_seconds": 3.0,
            # A destroyed study's registry entries stay Deprecated this long before removal.
            "registry_removal_seconds": 4.0,
            # IAN delivery: short backoff (0.5, 1, 2, 4 s) and timeouts (5 s: a TLS association under
            # three shards' load took longer than 2 s), five attempts before the DLQ.
            "ian_retry_base_seconds": 0.5,
            "ian_max_attempts": 5,
            "ian_timeout_seconds": 5.0,
            # ITI-18: a LeafClass answer of more than 20 objects is XDSTooManyResults (default 1,000),
            # so the limit is reached with one small submission.
            "xds_max_leaf_class": 20,
            # Audit batches and TLS rotation within a test's patience.
            "audit_flush_seconds": 0.5,
            "tls_check_seconds": 1.0,
            # Retention jobs go three objects a page, so that their continuation pages run.
            "retention_page_objects": 3,
        },
        registration_stability_seconds=1.5,
    )
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()
        print(f"local cloud logs in {logs}")


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


# --- per-file timings for the shard runner (tests/shards.py) ----------------------------------------

_TIMINGS: dict[str, float] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if os.environ.get("ARCHIVE_TEST_TIMINGS"):
        name = report.nodeid.split("::", 1)[0]
        _TIMINGS[name] = _TIMINGS.get(name, 0.0) + report.duration


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = os.environ.get("ARCHIVE_TEST_TIMINGS")
    if path:
        Path(path).write_text(json.dumps({k: round(v, 1) for k, v in _TIMINGS.items()}))
