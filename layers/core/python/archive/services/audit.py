"""The audit trail: every event that touches patient data, as a DICOM PS3.15 A.5 audit message,
written where it cannot be lost or rewritten.

``AuditTrail.record`` encodes a message once and hands it to each sink:
- ``BucketAuditWriter``: batches into the Object-Locked audit bucket (the record of truth); a
  listener flushes every few seconds from a background thread, a Lambda at the end of each
  invocation (``flush``). A batch that cannot be written stays buffered and is retried.
- ``OperationsLog``: one JSON line per message for CloudWatch (event, outcome, who; for alarms).
- ``SyslogForwarder`` (optional): IHE ITI-20 to a customer's or the operator's audit repository
  over TLS (RFC 5424/5425), from its own thread, so a slow receiver never slows the archive.

Recording never raises: losing an audit record is an operational alarm (``AUDIT RECORD LOST``),
not a reason to fail the patient-data operation that has already happened.
"""

from __future__ import annotations

import json
import logging
import queue
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from archive.audit.messages import AuditMessage, AuditSource, Outcome, encode
from archive.audit.syslog import frame, syslog_message
from archive.config import Settings
from archive.data.audit_store import AuditBucket
from archive.data.secrets import SecretTlsMaterial
from archive.tls.rotation import RotatingTls

LOG = logging.getLogger("archive.audit")
MAX_BUFFERED = 50_000


@dataclass(frozen=True)
class AuditRecord:
    message: AuditMessage
    xml: bytes

    def summary(self) -> dict[str, object]:
        m = self.message
        return {
            "at": m.at.isoformat(timespec="milliseconds"),
            "event": m.event_id.code,
            "event_name": m.event_id.meaning,
            "event_types": [t.code for t in m.event_types],
            "action": m.action.value,
            "outcome": int(m.outcome),
            "requestors": [p.user_id for p in m.participants if p.is_requestor],
            "source": m.source.source_id,
        }

    def json_line(self) -> bytes:
        return json.dumps({**self.summary(), "xml": self.xml.decode("utf-8")}, ensure_ascii=False).encode(
            "utf-8"
        )


class AuditSink(Protocol):
    def write(self, record: AuditRecord) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


class AuditTrail:
    def __init__(self, source: AuditSource, sinks: Iterable[AuditSink]) -> None:
        self.source = source
        self._sinks = list(sinks)

    def record(self, message: AuditMessage) -> None:
        try:
            record = AuditRecord(message, encode(message))
        except Exception:
            LOG.exception("AUDIT RECORD LOST: %s could not be encoded", message.event_id.meaning)
            return
        for sink in self._sinks:
            try:
                sink.write(record)
            except Exception:
                LOG.exception(
                    "AUDIT RECORD LOST: %s not written to %s", message.event_id.meaning, type(sink).__name__
                )

    def flush(self) -> None:
        for sink in self._sinks:
            try:
                sink.flush()
            except Exception:
                LOG.exception("audit sink %s could not flush", type(sink).__name__)

    def close(self) -> None:
        for sink in self._sinks:
            try:
                sink.close()
            except Exception:
                LOG.exception("audit sink %s could not close", type(sink).__name__)


class OperationsLog:
    """One JSON line per audit message at INFO (failures at WARNING), for CloudWatch and alarms."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._log = logger or logging.getLogger("archive.audit.events")

    def write(self, record: AuditRecord) -> None:
        level = logging.INFO if record.message.outcome is Outcome.SUCCESS else logging.WARNING
        self._log.log(level, "audit %s", json.dumps(record.summary()))

    def flush(self) -> None:
        return None

    def close(self) -> None:
        return None


class BucketAuditWriter:
    """Batches records into the audit bucket: at ``max_batch`` records, every ``flush_seconds``
    (background thread, if started) and on ``flush``/``close``."""

    def __init__(
        self, bucket: AuditBucket, *, source: str, max_batch: int = 500, flush_seconds: float = 5.0
    ) -> None:
        self._bucket = bucket
        self._source = source
        self._max_batch = max_batch
        self._flush_seconds = flush_seconds
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._buffer: list[bytes] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.batches_written = 0

    def start(self) -> BucketAuditWriter:
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self._flush_seconds):
            self.flush()

    def write(self, record: AuditRecord) -> None:
        with self._lock:
            if len(self._buffer) >= MAX_BUFFERED:
                LOG.error(
                    "AUDIT RECORD LOST: %d records buffered, the audit bucket is not reachable", MAX_BUFFERED
                )
                return
            self._buffer.append(record.json_line())
            full = len(self._buffer) >= self._max_batch
        if full and self._thread is None:
            self.flush()

    def flush(self) -> None:
        with self._flush_lock:
            while True:
                with self._lock:
                    batch = self._buffer[: self._max_batch]
                if not batch:
                    return
                try:
                    self._bucket.put_batch(batch, source=self._source)
                except Exception:
                    LOG.exception(
                        "audit batch of %d records not written; kept for the next attempt", len(batch)
                    )
                    return
                with self._lock:
                    del self._buffer[: len(batch)]
                self.batches_written += 1

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.flush()

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._buffer)


class SyslogForwarder:
    """IHE ITI-20 over TLS: a persistent mutually authenticated connection to an audit repository,
    reconnected on failure; messages wait in a bounded queue (dropped, with an error, if the
    repository stays away: the bucket remains the record of truth)."""

    def __init__(
        self,
        host: str,
        port: int,
        context: Callable[[], ssl.SSLContext],
        *,
        app_name: str,
        hostname: str | None = None,
        queue_size: int = 10_000,
        retry_seconds: float = 5.0,
    ) -> None:
        self._host = host
        self._port = port
        self._context = context
        self._app_name = app_name
        self._hostname = hostname or socket.gethostname()
        self._queue: queue.Queue[AuditRecord | None] = queue.Queue(maxsize=queue_size)
        self._retry_seconds = retry_seconds
        self._sock: ssl.SSLSocket | None = None
        self._thread = threading.Thread(target=self._run, name="audit-syslog", daemon=True)
        self._idle = threading.Event()
        self._idle.set()
        self.sent = 0

    def start(self) -> SyslogForwarder:
        self._thread.start()
        return self

    def write(self, record: AuditRecord) -> None:
        try:
            self._idle.clear()
            self._queue.put_nowait(record)
        except queue.Full:
            LOG.error("audit syslog queue full; message for %s:%d dropped", self._host, self._port)

    def flush(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not (self._queue.empty() and self._idle.is_set()) and time.monotonic() < deadline:
            time.sleep(0.02)

    def close(self) -> None:
        self.flush()
        self._queue.put(None)
        self._thread.join(timeout=5)
        self._disconnect()

    def _connect(self) -> ssl.SSLSocket:
        raw = socket.create_connection((self._host, self._port), timeout=10)
        sock = self._context().wrap_socket(raw, server_hostname=self._host)
        sock.settimeout(30)
        return sock

    def _disconnect(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None

    def _run(self) -> None:
        while True:
            record = self._queue.get()
            if record is None:
                return
            payload = frame(
                syslog_message(
                    record.xml,
                    hostname=self._hostname,
                    app_name=self._app_name,
                    failure=record.message.outcome is not Outcome.SUCCESS,
                    at=record.message.at,
                )
            )
            while True:
                try:
                    if self._sock is None:
                        self._sock = self._connect()
                    self._sock.sendall(payload)
                    self.sent += 1
                    break
                except (OSError, ssl.SSLError) as exc:
                    LOG.warning("audit syslog to %s:%d failed: %s; retrying", self._host, self._port, exc)
                    self._disconnect()
                    time.sleep(self._retry_seconds)
            if self._queue.empty():
                self._idle.set()


def build_audit_trail(
    settings: Settings, *, client_context: Callable[[], ssl.SSLContext] | None = None, background: bool = True
) -> AuditTrail:
    """The audit trail as configured: bucket (if AUDIT_BUCKET), CloudWatch, syslog (if a host is
    set and TLS material is available). ``background``: listeners flush from a thread; Lambda
    handlers pass False and call ``flush`` at the end of each invocation."""
    source = AuditSource(settings.audit_source_id, settings.audit_site_id)
    sinks: list[AuditSink] = [OperationsLog()]
    if settings.audit_bucket:
        writer = BucketAuditWriter(
            AuditBucket(settings), source=settings.audit_source_id, flush_seconds=settings.audit_flush_seconds
        )
        sinks.append(writer.start() if background else writer)
    else:
        LOG.warning("no AUDIT_BUCKET: audit messages go to the operations log only")
    if settings.audit_syslog_host:
        if client_context is None and settings.tls_secret_id:
            tls = RotatingTls(
                SecretTlsMaterial(settings, settings.tls_secret_id), check_seconds=settings.tls_check_seconds
            )
            client_context = tls.client
        if client_context is None:
            LOG.error("AUDIT_SYSLOG_HOST is set but no TLS material (TLS_SECRET_ID): not forwarding")
        else:
            sinks.append(
                SyslogForwarder(
                    settings.audit_syslog_host,
                    settings.audit_syslog_port,
                    client_context,
                    app_name=settings.audit_source_id,
                ).start()
            )
    return AuditTrail(source, sinks)
