"""Data access for storage tiers: each instance's availability in the index, the study aggregates
C-FIND reads (``nearline_instances`` on the study and series rows), study restores and their queue.

Every change is one DynamoDB transaction conditioned on the instance's previous availability, so a
redelivered S3 event changes nothing and the counters never drift. Nothing here lists the bucket or
HEADs objects on a request path: the index is told by S3's events (docs/storage.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pynamodb.exceptions import DoesNotExist, TransactWriteError, UpdateError
from pynamodb.transactions import TransactWrite

from archive.config import Settings
from archive.data.index import instance_record
from archive.data.models import Instance, Series, Study, TransactionConnection, conditional_check_failed
from archive.data.registration import _Queue
from archive.model.records import InstanceRecord
from archive.model.tiers import NEARLINE, RestoreTicket, needs_restore

REQUESTED = "REQUESTED"
RESTORING = "RESTORING"


@dataclass(frozen=True)
class StudyTierState:
    """What the index says about a study's tier and restore."""

    study_uid: str
    org_oid: str | None
    nearline_instances: int
    restore_state: str | None
    restore_tier: str | None
    restore_requested_at: datetime | None
    restore_ready_by: datetime | None
    restore_requesters: frozenset[str]
    restores_completed: int

    def ticket(self, *, newly_requested: bool = False) -> RestoreTicket | None:
        if not self.restore_state or not self.restore_requested_at or not self.restore_ready_by:
            return None
        return RestoreTicket(
            study_uid=self.study_uid,
            state=self.restore_state,
            tier=self.restore_tier or "",
            requested_at=self.restore_requested_at,
            ready_by=self.restore_ready_by,
            nearline_instances=self.nearline_instances,
            newly_requested=newly_requested,
        )


def _state(item: Study) -> StudyTierState:
    return StudyTierState(
        study_uid=item.study_uid,
        org_oid=item.org_oid,
        nearline_instances=max(0, int(item.nearline_instances or 0)),
        restore_state=item.restore_state,
        restore_tier=item.restore_tier,
        restore_requested_at=item.restore_requested_at,
        restore_ready_by=item.restore_ready_by,
        restore_requesters=frozenset(item.restore_requesters or ()),
        restores_completed=int(item.restores_completed or 0),
    )


def _conditional_failure(exc: Exception) -> bool:
    if isinstance(exc, TransactWriteError):
        reasons = getattr(exc, "cancellation_reasons", None) or []
        return any(r is not None and r.code == "ConditionalCheckFailed" for r in reasons)
    return conditional_check_failed(exc)


class TierIndex(TransactionConnection):
    """Availability of instances and studies in the index."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def instance(self, sop_instance_uid: str) -> Instance | None:
        try:
            return Instance.get(sop_instance_uid, consistent_read=True)
        except DoesNotExist:
            return None

    def record_class(self, item: Instance, storage_class: str) -> None:
        """The class S3 reported; availability follows it (NEARLINE for a class needing a restore)."""
        Instance(item.sop_instance_uid).update(actions=[Instance.storage_class.set(storage_class)])
        if needs_restore(storage_class):
            self.set_nearline(item, True, clear_restored=True)
        else:
            self.set_nearline(item, False)

    def set_nearline(
        self,
        item: Instance,
        nearline: bool,
        *,
        restored_until: datetime | None = None,
        clear_restored: bool = False,
    ) -> bool:
        """Flip one instance's availability with its study's and series' counters, once: True when
        this call changed it (a repeated event finds it changed already and does nothing)."""
        delta = 1 if nearline else -1
        instance_actions: list[Any] = [
            Instance.availability.set(NEARLINE) if nearline else Instance.availability.remove()
        ]
        if restored_until is not None:
            instance_actions.append(Instance.restored_until.set(restored_until))
        elif clear_restored:
            instance_actions.append(Instance.restored_until.remove())
        condition = Instance.availability.does_not_exist() if nearline else Instance.availability == NEARLINE
        # A rejected instance is not counted (C-FIND and IAN speak of the visible ones): its
        # availability changes alone, conditioned on it still being rejected, and the other way round.
        rejected = bool(item.rejected)
        visibility = Instance.rejected.exists() if rejected else Instance.rejected.does_not_exist()
        try:
            with TransactWrite(connection=self._connection()) as transaction:
                transaction.update(
                    Instance(item.sop_instance_uid),
                    actions=instance_actions,
                    condition=condition & visibility,
                )
                if not rejected:
                    transaction.update(Study(item.study_uid), actions=[Study.nearline_instances.add(delta)])
                    transaction.update(
                        Series(item.study_uid, item.series_uid),
                        actions=[Series.nearline_instances.add(delta)],
                    )
        except TransactWriteError as exc:
            if _conditional_failure(exc):
                fresh = Instance.get(item.sop_instance_uid, consistent_read=True)
                if bool(fresh.rejected) != rejected:  # rejected or restored meanwhile: once more
                    return self.set_nearline(
                        fresh, nearline, restored_until=restored_until, clear_restored=clear_restored
                    )
                return False
            raise
        return True

    def study(self, study_uid: str) -> StudyTierState | None:
        try:
            return _state(Study.get(study_uid, consistent_read=True))
        except DoesNotExist:
            return None

    def nearline_instances(self, study_uid: str) -> Iterator[InstanceRecord]:
        """The study's instances that need a restore (one Query of the study's instances)."""
        for item in Instance.by_study.query(study_uid, filter_condition=Instance.availability == NEARLINE):
            yield instance_record(item)

    # --- a study's restore -------------------------------------------------------------------

    def request_restore(
        self, study_uid: str, *, requester: str | None, tier: str, now: datetime, ready_by: datetime
    ) -> tuple[bool, StudyTierState | None]:
        """Open the study's restore unless one is open (True), and add ``requester`` to the AEs
        told when it is done. Conditional: concurrent retrievals open one restore, not several."""
        if requester:
            Study(study_uid).update(actions=[Study.restore_requesters.add({requester})])
        try:
            Study(study_uid).update(
                actions=[
                    Study.restore_state.set(REQUESTED),
                    Study.restore_requested_at.set(now),
                    Study.restore_tier.set(tier),
                    Study.restore_ready_by.set(ready_by),
                ],
                condition=Study.restore_state.does_not_exist() & (Study.nearline_instances > 0),
            )
            opened = True
        except UpdateError as exc:
            if not _conditional_failure(exc):
                raise
            opened = False
        return opened, self.study(study_uid)

    def restoring(self, study_uid: str) -> None:
        try:
            Study(study_uid).update(
                actions=[Study.restore_state.set(RESTORING)], condition=Study.restore_state.exists()
            )
        except UpdateError as exc:
            if not _conditional_failure(exc):
                raise

    def close_restore(self, state: StudyTierState) -> bool:
        """Close the study's restore once nothing in it is NEARLINE (True for the one caller that
        closed it: that one sends the notifications)."""
        try:
            Study(state.study_uid).update(
                actions=[
                    Study.restore_state.remove(),
                    Study.restore_requesters.remove(),
                    Study.restore_ready_by.remove(),
                    Study.restores_completed.add(1),
                ],
                condition=(Study.restore_state == state.restore_state)
                & (Study.nearline_instances.does_not_exist() | (Study.nearline_instances <= 0)),
            )
        except UpdateError as exc:
            if _conditional_failure(exc):
                return False
            raise
        return True


class RestoreQueue(_Queue):
    """Messages ``{"study_uid": ...}`` to the restore_study function: one per study restore."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, settings.restore_queue_url, "restore")

    def request(self, study_uid: str) -> None:
        self._send({"study_uid": study_uid}, 0)


class StorageEventQueue(_Queue):
    """S3 storage events as EventBridge delivers them into SQS (the local simulation sends here)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, settings.storage_events_queue_url, "storage events")

    def send(self, event: dict[str, Any]) -> None:
        self._send(event, 0)
