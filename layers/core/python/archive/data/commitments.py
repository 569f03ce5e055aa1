"""Data access for storage commitment transactions (DynamoDB), so they survive a listener restart.

A transaction is one small ``StorageCommitment`` item plus its references in ``StorageCommitmentPart``
slices of 1,000, all written in one DynamoDB transaction before the N-ACTION is answered: a request
is recorded whole or not at all. The outcome, once settled, is frozen the same way (result slices
plus the counts on the transaction, in one DynamoDB transaction conditioned on the writer's lease).

Pending transactions sit in a sparse, sharded GSI keyed by the time of their next check; a worker
leases one with a conditional write before working on it, so several listener tasks share the work.
Every state change after the lease is conditioned on still holding it.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from pynamodb.exceptions import DoesNotExist, PynamoDBException, TransactWriteError, UpdateError
from pynamodb.expressions.condition import Condition
from pynamodb.transactions import TransactWrite

from archive.config import Settings
from archive.data.models import (
    StorageCommitment,
    StorageCommitmentPart,
    TransactionConnection,
    conditional_check_failed,
)
from archive.errors import StorageFailure
from archive.model.commitment import (
    PENDING,
    REPORTED,
    UNDELIVERABLE,
    CommitmentRequest,
    CommitmentResult,
    CommitmentTransaction,
    Reference,
)

SHARDS = 4
# References (and outcomes) per StorageCommitmentPart item: at most ~71 KB with 64-character UIDs,
# well under DynamoDB's 400 KB; MAX_REFERENCES / 1,000 slices fit one DynamoDB transaction.
REFERENCES_PER_PART = 1000
REQUEST_PART = "request#"
RESULT_PART = "result#"
_CONDITIONAL_FAILURE = "ConditionalCheckFailed"


def _shard(transaction_uid: str) -> str:
    return f"P{zlib.crc32(transaction_uid.encode()) % SHARDS}"


def _part_key(prefix: str, number: int) -> str:
    return f"{prefix}{number:04d}"


def _slices(values: Sequence[Any]) -> list[Sequence[Any]]:
    return [values[i : i + REFERENCES_PER_PART] for i in range(0, len(values), REFERENCES_PER_PART)]


def _condition_failed(exc: TransactWriteError) -> bool:
    """The transaction was cancelled by its one condition (on the StorageCommitment item).

    Only that item carries a condition, so its failure is the only ConditionalCheckFailed reason
    (pynamodb orders a transaction's items by kind, so its position is not fixed).
    """
    return any(getattr(r, "code", None) == _CONDITIONAL_FAILURE for r in exc.cancellation_reasons or [])


def _transaction(item: StorageCommitment) -> CommitmentTransaction:
    return CommitmentTransaction(
        transaction_uid=item.transaction_uid,
        requester_ae=item.requester_ae,
        org_oid=item.org_oid,
        state=item.state,
        reference_count=int(item.reference_count),
        deadline_at=float(item.deadline_at),
        received_at=item.received_at,
        origin=item.origin,
        attempts=int(item.attempts or 0),
        result_saved=item.result_parts is not None,
        committed_count=None if item.committed_count is None else int(item.committed_count),
        failed_count=None if item.failed_count is None else int(item.failed_count),
        last_error=item.last_error,
        reported_on=item.reported_on,
        reported_at=item.reported_at,
        undeliverable_at=None if item.undeliverable_at is None else float(item.undeliverable_at),
    )


class CommitmentRepository(TransactionConnection):
    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    # --- recording a request ---------------------------------------------------------------

    def create(
        self,
        request: CommitmentRequest,
        *,
        requester_ae: str,
        org_oid: str,
        origin: str,
        now: float,
        deadline: float,
    ) -> bool:
        """Record a new transaction with all its references; False if the Transaction UID exists.

        Raises StorageFailure for anything else: then nothing was recorded, and the requester
        must be told so (it may retry), never answered as if the request were taken.
        """
        slices = _slices(request.references)
        parent = StorageCommitment(
            request.transaction_uid,
            requester_ae=requester_ae,
            org_oid=org_oid,
            origin=origin,
            reference_count=len(request.references),
            request_parts=len(slices),
            state=PENDING,
            pending=_shard(request.transaction_uid),
            next_attempt_at=now,
            received_at=datetime.now(UTC),
            deadline_at=deadline,
        )
        try:
            with TransactWrite(connection=self._connection()) as tx:
                tx.save(parent, condition=StorageCommitment.transaction_uid.does_not_exist())
                for number, refs in enumerate(slices):
                    classes = list(dict.fromkeys(r.sop_class_uid for r in refs))
                    position = {uid: i for i, uid in enumerate(classes)}
                    tx.save(
                        StorageCommitmentPart(
                            request.transaction_uid,
                            _part_key(REQUEST_PART, number),
                            sop_classes=classes,
                            references=[[position[r.sop_class_uid], r.sop_instance_uid] for r in refs],
                        )
                    )
        except TransactWriteError as exc:
            if _condition_failed(exc):
                return False
            raise StorageFailure(f"commitment {request.transaction_uid} not recorded: {exc}") from exc
        except PynamoDBException as exc:
            raise StorageFailure(f"commitment {request.transaction_uid} not recorded: {exc}") from exc
        return True

    # --- reading ---------------------------------------------------------------------------

    def get(self, transaction_uid: str) -> CommitmentTransaction | None:
        try:
            return _transaction(StorageCommitment.get(transaction_uid, consistent_read=True))
        except DoesNotExist:
            return None

    def references(self, transaction_uid: str) -> list[Reference]:
        """Every reference of the request, in the order the N-ACTION listed them."""
        refs: list[Reference] = []
        for part in StorageCommitmentPart.query(
            transaction_uid,
            StorageCommitmentPart.part.startswith(REQUEST_PART),
            consistent_read=True,
        ):
            classes = list(part.sop_classes or [])
            refs.extend(Reference(classes[i], uid) for i, uid in part.references or [])
        return refs

    def result(self, transaction_uid: str, references: Sequence[Reference]) -> CommitmentResult:
        """The frozen outcome (see ``save_result``)."""
        outcomes: list[int] = []
        for part in StorageCommitmentPart.query(
            transaction_uid,
            StorageCommitmentPart.part.startswith(RESULT_PART),
            consistent_read=True,
        ):
            outcomes.extend(int(o) for o in part.outcomes or [])
        return CommitmentResult.from_outcomes(references, outcomes)

    def due_and_next(self, now: float, limit: int = 50) -> tuple[list[str], float | None]:
        """The transactions due now (oldest first per shard) and the earliest time a pending one
        not due yet will be (None: none is pending). One Query per shard reads at most ``limit``
        due keys and one more, so a worker can sleep until then instead of polling."""
        due: list[str] = []
        upcoming: float | None = None
        for shard in range(SHARDS):
            for item in StorageCommitment.pending_index.query(
                f"P{shard}", limit=limit + 1, page_size=limit + 1
            ):
                at = float(item.next_attempt_at)
                if at > now:
                    upcoming = at if upcoming is None else min(upcoming, at)
                    break
                due.append(item.transaction_uid)
        return due, upcoming

    def undeliverable(self) -> Iterator[CommitmentTransaction]:
        """Transactions given up on, oldest first (sparse GSI; for the operator)."""
        for item in StorageCommitment.undeliverable_index.query(UNDELIVERABLE):
            found = self.get(item.transaction_uid)
            if found is not None:
                yield found

    # --- working on a transaction (every write conditioned on the lease) --------------------

    def lease(
        self, transaction_uid: str, owner: str, *, now: float, seconds: float, origin_grace: float
    ) -> CommitmentTransaction | None:
        """Take a due transaction for ``seconds``; None if it is not this worker's to take now.

        Not takeable: done, not due, leased by another worker, or (before its first delivery
        attempt, until ``origin_grace`` after its deadline) received by another listener task, which
        holds the requester's association and should report on it.
        """
        item = StorageCommitment(transaction_uid)
        try:
            item.update(
                actions=[
                    StorageCommitment.lease_owner.set(owner),
                    StorageCommitment.lease_until.set(now + seconds),
                ],
                condition=(StorageCommitment.state == PENDING)
                & (StorageCommitment.next_attempt_at <= now)
                & ((StorageCommitment.lease_until < now) | (StorageCommitment.lease_owner == owner))
                & (
                    (StorageCommitment.origin == owner)
                    | (StorageCommitment.attempts > 0)
                    | (StorageCommitment.deadline_at < now - origin_grace)
                ),
            )
        except UpdateError as exc:
            if conditional_check_failed(exc):
                return None
            raise
        return _transaction(item)

    @staticmethod
    def _held(owner: str, now: float) -> Condition:
        return (
            (StorageCommitment.state == PENDING)
            & (StorageCommitment.lease_owner == owner)
            & (StorageCommitment.lease_until >= now)
        )

    def _update_held(self, transaction_uid: str, owner: str, now: float, actions: list[Any]) -> bool:
        try:
            StorageCommitment(transaction_uid).update(actions=actions, condition=self._held(owner, now))
        except UpdateError as exc:
            if conditional_check_failed(exc):
                return False
            raise
        return True

    def renew(self, transaction_uid: str, owner: str, *, now: float, seconds: float) -> bool:
        """Extend this worker's lease; False if it has lost it (or the transaction is done).

        Called right before a report is sent: the check that nobody else reports it meanwhile.
        """
        return self._update_held(
            transaction_uid, owner, now, [StorageCommitment.lease_until.set(now + seconds)]
        )

    def recheck_later(self, transaction_uid: str, owner: str, *, now: float, at: float) -> bool:
        return self._update_held(
            transaction_uid,
            owner,
            now,
            [StorageCommitment.next_attempt_at.set(at), StorageCommitment.lease_until.set(0)],
        )

    def save_result(
        self,
        transaction_uid: str,
        owner: str,
        *,
        now: float,
        references: Sequence[Reference],
        result: CommitmentResult,
    ) -> bool:
        """Freeze the outcome once settled, so every delivery attempt reports the same thing."""
        slices = _slices(result.outcomes(references))
        try:
            with TransactWrite(connection=self._connection()) as tx:
                tx.update(
                    StorageCommitment(transaction_uid),
                    actions=[
                        StorageCommitment.result_parts.set(len(slices)),
                        StorageCommitment.committed_count.set(len(result.committed)),
                        StorageCommitment.failed_count.set(len(result.failed)),
                    ],
                    condition=self._held(owner, now) & StorageCommitment.result_parts.does_not_exist(),
                )
                for number, outcomes in enumerate(slices):
                    tx.save(
                        StorageCommitmentPart(
                            transaction_uid, _part_key(RESULT_PART, number), outcomes=list(outcomes)
                        )
                    )
        except TransactWriteError as exc:
            if _condition_failed(exc):
                return False
            raise
        return True

    def delivery_failed(
        self, transaction_uid: str, owner: str, *, now: float, attempts: int, at: float | None, error: str
    ) -> bool:
        """Count a failed delivery; ``at`` None means give up (UNDELIVERABLE, alarmed on)."""
        actions: list[Any] = [
            StorageCommitment.attempts.set(attempts),
            StorageCommitment.last_error.set(error[:1000]),
            StorageCommitment.lease_until.set(0),
        ]
        if at is None:
            actions += [
                StorageCommitment.state.set(UNDELIVERABLE),
                StorageCommitment.pending.remove(),
                StorageCommitment.next_attempt_at.remove(),
                StorageCommitment.undeliverable.set(UNDELIVERABLE),
                StorageCommitment.undeliverable_at.set(now),
            ]
        else:
            actions.append(StorageCommitment.next_attempt_at.set(at))
        return self._update_held(transaction_uid, owner, now, actions)

    def reported(self, transaction_uid: str, *, on: str) -> bool:
        """Mark the report delivered; False if the transaction was not pending any more."""
        try:
            StorageCommitment(transaction_uid).update(
                actions=[
                    StorageCommitment.state.set(REPORTED),
                    StorageCommitment.reported_at.set(datetime.now(UTC)),
                    StorageCommitment.reported_on.set(on),
                    StorageCommitment.pending.remove(),
                    StorageCommitment.next_attempt_at.remove(),
                    StorageCommitment.lease_until.set(0),
                ],
                condition=StorageCommitment.state == PENDING,
            )
        except UpdateError as exc:
            if conditional_check_failed(exc):
                return False
            raise
        return True

    # --- operator ----------------------------------------------------------------------------

    def redeliver(self, transaction_uid: str, *, now: float) -> bool:
        """Put an UNDELIVERABLE transaction back in the queue (after its AE was fixed)."""
        try:
            StorageCommitment(transaction_uid).update(
                actions=[
                    StorageCommitment.state.set(PENDING),
                    StorageCommitment.pending.set(_shard(transaction_uid)),
                    StorageCommitment.next_attempt_at.set(now),
                    StorageCommitment.attempts.set(0),
                    StorageCommitment.lease_until.set(0),
                    StorageCommitment.undeliverable.remove(),
                    StorageCommitment.undeliverable_at.remove(),
                ],
                condition=StorageCommitment.state == UNDELIVERABLE,
            )
        except UpdateError as exc:
            if conditional_check_failed(exc):
                return False
            raise
        return True
