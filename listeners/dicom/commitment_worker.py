"""Sends storage commitment reports (N-EVENT-REPORT) when transactions are settled.

Runs beside the listener. Pending transactions come from DynamoDB, not from memory, so a restarted
listener picks up what its predecessor left. A report goes back on the requester's association if
that is still open on this listener task (only the task that received the N-ACTION has it);
otherwise on a new association to the requester's registered AE (role selection: the archive as
SCP), retried with exponential backoff, and given up as UNDELIVERABLE (metric, alarm, admin CLI).

No transaction is reported twice: a worker leases it for longer than one delivery attempt can
take (every network wait of an attempt is bounded), and renews the lease (a conditional write
that fails if another worker took over) immediately before sending.

Transactions are worked on by a few threads at once (WORKING_THREADS): a requester that never
answers its N-EVENT-REPORT holds one thread for up to ``attempt_bound()`` (minutes), and every
other organisation's reports must not wait behind it.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from archive.data.commitments import CommitmentRepository
from archive.data.index import IndexRepository
from archive.data.objects import ObjectStore
from archive.dicom.commitment import EVENT_ALL_COMMITTED, STORAGE_COMMITMENT_SOP_INSTANCE, event_report
from archive.dicom.transport import open_association
from archive.model.commitment import CommitmentTransaction, Reference
from archive.services.commitment import evaluate
from archive.services.directory import CachedRegistry
from archive.tls.rotation import RotatingTls
from archive.topology import COMMITMENT_UNDELIVERABLE_METRIC
from aws_lambda_powertools.metrics import MetricUnit, single_metric
from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import StorageCommitmentPushModel  # type: ignore[attr-defined]

from .server import LiveAssociations, set_nodelay

LOG = logging.getLogger("archive.commitment")
SAME_ASSOCIATION = "SAME_ASSOCIATION"
NEW_ASSOCIATION = "NEW_ASSOCIATION"
# Re-checks of unsettled instances back off with the transaction's age: a quarter of it, within
# these bounds (a 10,000-reference transaction is 100 index reads a pass).
RECHECK_MIN_SECONDS = 0.5
RECHECK_MAX_SECONDS = 10.0
# With nothing due the worker sleeps until the earliest pending transaction's next check, or a new
# N-ACTION on this task wakes it, and polls at least this often for transactions other tasks
# received (taken over only after their deadline and a grace) or that are leased elsewhere.
IDLE_POLL_SECONDS = 10.0
# Transactions whose references a worker keeps in memory between checks: up to ~10 MB each for
# 40,000 references, so a few hundred MB at worst; more pending ones are re-read, not lost.
CHECKING_CACHE = 16
# Another task's transaction is taken over only this long after its deadline (unless a delivery
# was tried already): the receiving task, which settles it at the deadline, should have reported
# it on the open association by then. After that it is presumed gone (crashed, scaled in).
ORIGIN_GRACE_SECONDS = 5.0
# Network waits of one new association: connect, A-ASSOCIATE, N-EVENT-REPORT response, A-RELEASE.
WAITS_PER_ASSOCIATION = 4
# Transactions checked and reported at once by one listener task. Each may hold a thread for the
# whole of a delivery attempt to a requester that does not answer.
WORKING_THREADS = 8


class DeliveryFailed(Exception):
    """This attempt failed; a later one may succeed."""


class RequesterUnknown(DeliveryFailed):
    """The requester's AE is not registered: there is nowhere to deliver to (given up at once)."""


def emit_undeliverable_metric(namespace: str, transaction: CommitmentTransaction) -> None:
    """One CloudWatch embedded-metric-format line (dimension ``service``); CDK alarms on it.

    The transaction and requester ride along as EMF metadata (searchable in the log, not dimensions).
    """
    with single_metric(
        name=COMMITMENT_UNDELIVERABLE_METRIC, unit=MetricUnit.Count, value=1, namespace=namespace
    ) as metric:
        metric.add_metadata(key="transaction_uid", value=transaction.transaction_uid)
        metric.add_metadata(key="requester_ae", value=transaction.requester_ae)
    sys.stdout.flush()  # the log driver must see the line now, not when a buffer fills


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
        owner: str,
        retry_base_seconds: float,
        max_attempts: int,
        delivery_timeout: float,
        same_association_timeout: float,
        on_undeliverable: Callable[[CommitmentTransaction], None] = lambda transaction: None,
        poll_seconds: float = 0.25,
        origin_grace: float = ORIGIN_GRACE_SECONDS,
        lease_seconds: float | None = None,
        tls: RotatingTls | None = None,
        on_all_committed: Callable[[list[str]], object] | None = None,
        staging: ObjectStore | None = None,
        staged_grace_seconds: float = 0.0,
    ) -> None:
        self.repository = repository
        self.index = index
        self.objects = objects
        self.registry = registry
        self.live = live
        self.archive_ae_title = archive_ae_title
        self.owner = owner
        self.retry_base_seconds = retry_base_seconds
        self.max_attempts = max_attempts
        self.delivery_timeout = delivery_timeout
        self.same_association_timeout = same_association_timeout
        self.on_undeliverable = on_undeliverable
        self.poll_seconds = poll_seconds
        self.origin_grace = origin_grace
        # Longer than the longest delivery attempt, so nobody else starts one meanwhile.
        self.lease_seconds = lease_seconds if lease_seconds is not None else self.attempt_bound() * 1.5
        self.tls = tls  # for requesters registered with the tls flag
        # Registration of the committed studies (archive.services.registration), when configured.
        self.on_all_committed = on_all_committed
        # The staging tier: an instance received before the deadline whose locked copy is still on
        # its way is waited for up to this much longer (docs/storage.md, "Two tiers").
        self.staging = staging
        self.staged_grace_seconds = staged_grace_seconds if staging is not None else 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # When the earliest pending transaction not due at the last pass will be (None: none).
        self._upcoming: float | None = None
        # Per transaction this worker is checking: its references (they never change) and the
        # instances already decided. Bounded: a transaction another task took over is forgotten.
        self._checking: OrderedDict[str, tuple[list[Reference], dict[Reference, int]]] = OrderedDict()
        self._checking_lock = threading.Lock()
        # Leased transactions waiting for a working thread, and those queued or being worked on
        # (not leased again meanwhile: the lease admits its own owner).
        self._work: queue.Queue[CommitmentTransaction] = queue.Queue()
        self._in_hand: set[str] = set()
        self._in_hand_lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def attempt_bound(self) -> float:
        """The longest one delivery attempt can take: the same association, then a new one."""
        return self.same_association_timeout + WAITS_PER_ASSOCIATION * self.delivery_timeout

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="commitment-worker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.live.arrivals.set()
        if self._thread:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        # Poll fast while there is work. Without: sleep until the earliest pending transaction's
        # next check or a new N-ACTION on this task (LiveAssociations.arrivals), backing off to
        # IDLE_POLL_SECONDS: an idle listener costs a few DynamoDB queries every ten seconds, not
        # several a second (they were a sixth of an otherwise idle listener's CPU during C-FINDs).
        wait = self.poll_seconds
        while not self._stop.is_set():
            try:
                busy = self.run_once() > 0
            except Exception:
                LOG.exception("commitment worker pass failed")
                busy = False
            wait = self.poll_seconds if busy else min(wait * 2, IDLE_POLL_SECONDS)
            if self._upcoming is not None:
                wait = min(wait, max(self.poll_seconds, self._upcoming - time.time()))
            if self.live.arrivals.wait(wait):
                self.live.arrivals.clear()
                wait = self.poll_seconds

    def run_once(self) -> int:
        """Lease every due transaction not already in hand and pass it to the working threads, once;
        returns how many were passed on (their checks and reports run on those threads)."""
        count = 0
        due, self._upcoming = self.repository.due_and_next(time.time())
        for transaction_uid in due:
            if self._stop.is_set():
                break
            with self._in_hand_lock:
                if transaction_uid in self._in_hand:
                    continue
            transaction = self.repository.lease(
                transaction_uid,
                self.owner,
                now=time.time(),
                seconds=self.lease_seconds,
                origin_grace=self.origin_grace,
            )
            if transaction is None:
                continue
            with self._in_hand_lock:
                if transaction_uid in self._in_hand:
                    continue
                self._in_hand.add(transaction_uid)
            count += 1
            self._ensure_threads()
            self._work.put(transaction)
        return count

    def _ensure_threads(self) -> None:
        with self._in_hand_lock:
            while len(self._threads) < WORKING_THREADS:
                thread = threading.Thread(
                    target=self._working, name=f"commitment-{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                thread.start()

    def _working(self) -> None:
        while not self._stop.is_set():
            try:
                transaction = self._work.get(timeout=1.0)
            except queue.Empty:
                continue
            try:
                self.work(transaction)
            except Exception:
                # One transaction's failure (e.g. DynamoDB throttling) must not hold up the others;
                # its lease runs out and it is taken up again.
                LOG.exception("commitment %s: pass failed", transaction.transaction_uid)
            finally:
                with self._in_hand_lock:
                    self._in_hand.discard(transaction.transaction_uid)
                # The loop recomputes what is due next (this one may be due again soon, or done).
                self.live.arrivals.set()

    def work(self, transaction: CommitmentTransaction) -> None:
        """Check a leased transaction, and report it once settled."""
        uid = transaction.transaction_uid
        references, settled = self._checked(uid)
        if transaction.result_saved:
            self._forget(uid)
            result = self.repository.result(uid, references)
        else:
            now = time.time()
            result = evaluate(
                references,
                self.index,
                self.objects,
                org_oid=transaction.org_oid,
                deadline_passed=now >= transaction.deadline_at,
                settled=settled,
                staging=self.staging,
                staged_deadline_passed=now >= transaction.deadline_at + self.staged_grace_seconds,
            )
            if not result.settled:
                due = transaction.deadline_at
                if now >= due:
                    due += self.staged_grace_seconds
                at = min(due, time.time() + self._recheck_delay(transaction, now))
                if not self.repository.recheck_later(uid, self.owner, now=time.time(), at=at):
                    self._forget(uid)
                return
            self._forget(uid)
            if not self.repository.save_result(
                uid, self.owner, now=time.time(), references=references, result=result
            ):
                LOG.info("commitment %s: lease lost before the result was saved", uid)
                return
        # The check before reporting: still ours, and for long enough to finish the attempt.
        if not self.repository.renew(uid, self.owner, now=time.time(), seconds=self.lease_seconds):
            LOG.info("commitment %s: lease lost before reporting; another worker has it", uid)
            return
        event_type, info = event_report(uid, result, self.archive_ae_title)
        try:
            channel = self._deliver(uid, transaction.requester_ae, event_type, info)
        except Exception as exc:
            self._failed(transaction, exc)
            return
        if (
            self.repository.reported(uid, on=channel)
            and event_type == EVENT_ALL_COMMITTED
            and self.on_all_committed is not None
        ):
            try:
                self.on_all_committed([r.sop_instance_uid for r in result.committed])
            except Exception:
                LOG.exception("registration request for commitment %s failed", uid)
        LOG.info(
            "commitment %s reported on %s: %d committed, %d failed",
            uid,
            channel,
            len(result.committed),
            len(result.failed),
        )

    def _checked(self, transaction_uid: str) -> tuple[list[Reference], dict[Reference, int]]:
        """The transaction's references and decided instances, read from DynamoDB once per worker."""
        with self._checking_lock:
            held = self._checking.get(transaction_uid)
            if held is not None:
                self._checking.move_to_end(transaction_uid)
                return held
        # Read outside the lock: 10,000 references are 100 reads, and other threads check meanwhile.
        held = (self.repository.references(transaction_uid), {})
        with self._checking_lock:
            held = self._checking.setdefault(transaction_uid, held)
            self._checking.move_to_end(transaction_uid)
            while len(self._checking) > CHECKING_CACHE:
                self._checking.popitem(last=False)
        return held

    def _forget(self, transaction_uid: str) -> None:
        with self._checking_lock:
            self._checking.pop(transaction_uid, None)

    @staticmethod
    def _recheck_delay(transaction: CommitmentTransaction, now: float) -> float:
        received = transaction.received_at.timestamp() if transaction.received_at else now
        return min(RECHECK_MAX_SECONDS, max(RECHECK_MIN_SECONDS, (now - received) / 4))

    def _failed(self, transaction: CommitmentTransaction, exc: Exception) -> None:
        uid = transaction.transaction_uid
        attempts = transaction.attempts + 1
        give_up = attempts >= self.max_attempts or isinstance(exc, RequesterUnknown)
        now = time.time()
        at = None if give_up else now + self.retry_base_seconds * 2 ** (attempts - 1)
        error = f"{type(exc).__name__}: {exc}"
        if not self.repository.delivery_failed(
            uid, self.owner, now=now, attempts=attempts, at=at, error=error
        ):
            LOG.warning("commitment %s: delivery failed (%s) after the lease was lost", uid, error)
            return
        if give_up:
            LOG.error(
                "COMMITMENT UNDELIVERABLE %s to %s after %d attempts: %s",
                uid,
                transaction.requester_ae,
                attempts,
                error,
            )
            self.on_undeliverable(transaction)
        else:
            LOG.warning(
                "commitment %s report to %s failed (attempt %d): %s",
                uid,
                transaction.requester_ae,
                attempts,
                error,
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
            raise RequesterUnknown(f"requester AE {requester_ae} is not registered")
        ae = AE(ae_title=self.archive_ae_title)
        # Every wait bounded: the lease (attempt_bound) relies on it.
        ae.connection_timeout = self.delivery_timeout
        ae.network_timeout = self.delivery_timeout
        ae.acse_timeout = self.delivery_timeout
        ae.dimse_timeout = self.delivery_timeout
        ae.add_requested_context(StorageCommitmentPushModel)
        role = build_role(StorageCommitmentPushModel, scp_role=True, scu_role=False)
        new = open_association(
            ae,
            ae_info,
            self.registry.organisation(ae_info.org_oid),
            tls=self.tls,
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
