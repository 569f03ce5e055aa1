"""Entry point of the DICOM listener container: ``python -m listeners.dicom``."""

from __future__ import annotations

import logging
import os
import signal
import threading

from archive import topology as t
from archive.config import Settings
from pynetdicom import _config

from .app import build


def _port(value: str) -> int | None:
    """A port number; empty (or "off") turns that listener off."""
    return None if value.strip().lower() in ("", "off") else int(value)


def main() -> None:
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO"), format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("botocore").setLevel(logging.WARNING)
    # pynetdicom logs every DIMSE message and C-GET/C-MOVE sub-operation (four lines per instance
    # sent: a quarter of the CPU of sending one, docs/benchmarks.md); association events, warnings
    # and errors stay. The audit trail and the access records say what was sent to whom.
    _config.LOG_HANDLER_LEVEL = "none"
    logging.getLogger("pynetdicom.service_class").setLevel(logging.WARNING)
    settings = Settings.from_env()
    service = build(
        settings,
        host=os.environ.get(t.ENV_DICOM_HOST, "0.0.0.0"),
        port=_port(os.environ.get(t.ENV_DICOM_PORT, "11112")),
        tls_port=_port(os.environ.get(t.ENV_DICOM_TLS_PORT, "")),
    )
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    signal.signal(signal.SIGINT, lambda *_: stopped.set())
    service.start()
    stopped.wait()
    service.stop()


if __name__ == "__main__":
    main()
