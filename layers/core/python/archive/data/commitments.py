"""Data access for storage commitment transactions (DynamoDB), so they survive a listener restart.

Pending transactions sit in a sparse, sharded GSI keyed by the time of their next check; a worker
leases one with a conditional write before working on it, so several listeners can share the work.
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from pynamodb.exceptions import DoesNotExist, PutError, UpdateError

from archive.data.models import StorageCommitment
from archive.model.commitment import CommitmentRequest, CommitmentResult, CommitmentTransaction, Reference

SHARDS = 4
PENDING = "PENDING"
REPORTED = "REPORTED"
UNDELIVERABLE = "UNDELIVERABLE"


def _shard(transaction_uid: str) -> str:
    return f"P{zlib.crc32(transaction_uid.encode()) % SHARDS}"


class CommitmentRepository:
    def create(
        self, request: CommitmentRequest, *, requester_ae: str, org_oid: str, now: float, deadline: float
    ) -> bool:
        """Record a new transaction; False if this Transaction UID is known already (a resend)."""
        item = StorageCommitment(
            request.transaction_uid,
            requester_ae=requester_ae,
            org_oid=org_oid,
            references=[r.as_json() for r in request.references],
            state=PENDING,
            pending=_shard(request.transaction_uid),
            next_attempt_at=now,
            received_at=datetime.now(UTC),
            deadline_at=deadline,
        )
        try:
            item.save(condition=StorageCommitment.transaction_uid.does_not_exist())
            return True
        except PutError:
            return False

    def get(self, transaction_uid: str) -> CommitmentTransaction | None:
        try:
            return _transaction(StorageCommitment.get(transaction_uid, consistent_read=True))
        except DoesNotExist:
            return None

    def due(self, now: float, limit: int = 50) -> Iterator[str]:
        """Transaction UIDs whose next check is due, oldest first."""
        for shard in range(SHARDS):
            for item in StorageCommitment.pending_index.query(
                f"P{shard}", StorageCommitment.next_attempt_at <= now, limit=limit
            ):
                yield item.transaction_uid

    def lease(self, transaction_uid: str, owner: str, now: float, seconds: float) -> bool:
        """Take the transaction for ``seconds``; False if another worker holds it or it is done."""
        item = StorageCommitment(transaction_uid)
        try:
            item.update(
                actions=[
                    StorageCommitment.lease_owner.set(owner),
                    StorageCommitment.lease_until.set(now + seconds),
                ],
                condition=(StorageCommitment.state == PENDING)
                & ((StorageCommitment.lease_until < now) | (StorageCommitment.lease_owner == owner)),
            )
        except UpdateError:
            return False
        return True

    def recheck_later(self, transaction_uid: str, at: float) -> None:
        StorageCommitment(transaction_uid).update(
            actions=[StorageCommitment.next_attempt_at.set(at), StorageCommitment.lease_until.set(0)]
        )

    def delivery_failed(self, transaction_uid: str, *, attempts: int, at: float | None, error: str) -> None:
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
            ]
        else:
            actions.append(StorageCommitment.next_attempt_at.set(at))
        StorageCommitment(transaction_uid).update(actions=actions)

    def save_result(self, transaction_uid: str, result: CommitmentResult) -> None:
        """Freeze the outcome once settled, so every delivery attempt reports the same thing."""
        StorageCommitment(transaction_uid).update(actions=[StorageCommitment.result.set(result.as_json())])

    def reported(self, transaction_uid: str, *, on: str) -> None:
        with contextlib.suppress(UpdateError):
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


def _transaction(item: StorageCommitment) -> CommitmentTransaction:
    return CommitmentTransaction(
        transaction_uid=item.transaction_uid,
        requester_ae=item.requester_ae,
        org_oid=item.org_oid,
        references=tuple(Reference.from_json(r) for r in item.references),
        state=item.state,
        deadline_at=float(item.deadline_at),
        attempts=int(item.attempts or 0),
        result=CommitmentResult.from_json(item.result) if item.result is not None else None,
    )
