"""Sends storage commitment reports (N-EVENT-REPORT) when transactions are settled.

Runs beside the listener. Pending transactions come from DynamoDB, not from memory, so a restarted
listener picks up what its predecessor left. A report goes back on the requester's association if
that is still open on this listener; otherwise on a new association to the requester's registered
AE (role selection: the archive as SCP), retried with exponential backoff.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from archive.data.commitments import CommitmentRepository
from archive.data.index import IndexRepository
from archive.data.objects import ObjectStore
from archive.dicom.commitment import EVENT_ALL_COMMITTED, STORAGE_COMMITMENT_SOP_INSTANCE, event_report
from archive.model.commitment import Reference
from archive.services.commitment import evaluate
from archive.services.directory import CachedRegistry
from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import StorageCommitmentPushModel  # type: ignore[attr-defined]

from .server import LiveAssociations, set_nodelay

LOG = logging.getLogger("archive.commitment")
SAME_ASSOCIATION = "SAME_ASSOCIATION"
NEW_ASSOCIATION = "NEW_ASSOCIATION"
LEASE_SECONDS = 30.0
RECHECK_SECONDS = 0.5
IDLE_POLL_SECONDS = 2.0


class DeliveryFailed(Exception):
    pass


class CommitmentWorker:
    def __init__(
        self,
        *,
        repository: CommitmentRepository,
        index: IndexRepository,
        objects: ObjectStore,
        registry: CachedRegistry,
        live: LiveAssociations,
        archive_ae_title: str,
        retry_base_seconds: float,
        max_attempts: int,
        poll_seconds: float = 0.25,
        on_all_committed: Callable[[list[str]], object] | None = None,
    ) -> None:
        self.repository = repository
        self.index = index
        self.objects = objects
        self.registry = registry
        self.live = live
        self.archive_ae_title = archive_ae_title
        self.retry_base_seconds = retry_base_seconds
        self.max_attempts = max_attempts
        self.poll_seconds = poll_seconds
        # Registration of the committed studies (archive.services.registration), when configured.
        self.on_all_committed = on_all_committed
        self.owner = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Per pending transaction, the instances already decided (rebuilt after a restart).
        self._settled: dict[str, dict[Reference, int]] = {}

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="commitment-worker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        # Poll fast while there is work, back off to IDLE_POLL_SECONDS when there is none: an idle
        # listener then costs a few DynamoDB queries a second, not dozens.
        wait = self.poll_seconds
        while not self._stop.is_set():
            try:
                busy = self.run_once() > 0
            except Exception:
                LOG.exception("commitment worker pass failed")
                busy = False
            wait = self.poll_seconds if busy else min(wait * 2, IDLE_POLL_SECONDS)
            self._stop.wait(wait)

    def run_once(self, now: float | None = None) -> int:
        """Work every due transaction once; returns how many were looked at."""
        now = time.time() if now is None else now
        count = 0
        for transaction_uid in list(self.repository.due(now)):
            if not self.repository.lease(transaction_uid, self.owner, now, LEASE_SECONDS):
                continue
            count += 1
            self._work(transaction_uid, now)
        return count

    def _work(self, transaction_uid: str, now: float) -> None:
        item = self.repository.get(transaction_uid)
        if item is None:
            return
        if item.result is not None:
            result = item.result
        else:
            settled = self._settled.setdefault(transaction_uid, {})
            result = evaluate(
                item.references,
                self.index,
                self.objects,
                deadline_passed=now >= item.deadline_at,
                settled=settled,
            )
            if not result.settled:
                self.repository.recheck_later(transaction_uid, now + RECHECK_SECONDS)
                return
            self.repository.save_result(transaction_uid, result)
            self._settled.pop(transaction_uid, None)
        event_type, info = event_report(transaction_uid, result, self.archive_ae_title)
        try:
            channel = self._deliver(transaction_uid, item.requester_ae, event_type, info)
        except Exception as exc:
            attempts = item.attempts + 1
            give_up = attempts >= self.max_attempts
            at = None if give_up else now + self.retry_base_seconds * 2 ** (attempts - 1)
            LOG.warning(
                "commitment %s report to %s failed (attempt %d)%s: %s",
                transaction_uid,
                item.requester_ae,
                attempts,
                "; giving up" if give_up else "",
                exc,
            )
            self.repository.delivery_failed(transaction_uid, attempts=attempts, at=at, error=str(exc))
            return
        self.repository.reported(transaction_uid, on=channel)
        if event_type == EVENT_ALL_COMMITTED and self.on_all_committed is not None:
            try:
                self.on_all_committed([r.sop_instance_uid for r in result.committed])
            except Exception:
                LOG.exception("registration request for commitment %s failed", transaction_uid)
        LOG.info(
            "commitment %s reported on %s: %d committed, %d failed",
            transaction_uid,
            channel,
            len(result.committed),
            len(result.failed),
        )

    def _deliver(self, transaction_uid: str, requester_ae: str, event_type: int, info: Dataset) -> str:
        assoc = self.live.pop(transaction_uid)
        if assoc is not None:
            try:
                self._send(assoc, event_type, info)
                return SAME_ASSOCIATION
            except DeliveryFailed as exc:
                LOG.info(
                    "same-association report for %s failed (%s); opening a new one", transaction_uid, exc
                )
        ae_info = self.registry.find_ae(requester_ae)
        if ae_info is None:
            raise DeliveryFailed(f"requester AE {requester_ae} is no longer registered")
        ae = AE(ae_title=self.archive_ae_title)
        ae.network_timeout = 30
        ae.acse_timeout = 30
        ae.dimse_timeout = 30
        ae.add_requested_context(StorageCommitmentPushModel)
        role = build_role(StorageCommitmentPushModel, scp_role=True, scu_role=False)
        new = ae.associate(
            ae_info.host,
            ae_info.port,
            ae_title=requester_ae,
            ext_neg=[role],
            evt_handlers=[(evt.EVT_CONN_OPEN, set_nodelay)],
        )
        if not new.is_established:
            raise DeliveryFailed(f"association to {requester_ae} at {ae_info.host}:{ae_info.port} failed")
        try:
            self._send(new, event_type, info)
        finally:
            new.release()
        return NEW_ASSOCIATION

    @staticmethod
    def _send(assoc: Any, event_type: int, info: Dataset) -> None:
        status = assoc.send_n_event_report(
            info, event_type, StorageCommitmentPushModel, STORAGE_COMMITMENT_SOP_INSTANCE
        )[0]
        code = getattr(status, "Status", None)
        if code is None:
            raise DeliveryFailed("no response to N-EVENT-REPORT")
        if code != 0x0000:
            raise DeliveryFailed(f"N-EVENT-REPORT answered 0x{code:04X}")
