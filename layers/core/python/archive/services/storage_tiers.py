"""Storage tiers: instances in cold S3 classes are NEARLINE, and a retrieval of one restores its study.

- S3 tells the archive when an object changes class or a restore completes or expires (EventBridge
  events on AWS, the local lifecycle simulation locally); ``apply`` keeps each instance's
  availability and its study's and series' NEARLINE counts in the index, so C-FIND, IAN and
  retrieval read availability from the index and never ask S3 per object.
- A retrieval that touches NEARLINE instances opens ONE restore per study (``for_retrieval``):
  a conditional write on the study row, then one message to the restore_study function, which
  issues RestoreObject for each NEARLINE object of the study (``run_restore``; idempotent).
- When the last instance of a study is back, the restore is closed and every AE that asked for it
  gets an IAN (ONLINE), through the same queue and Lambda as registration's IANs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from archive.config import Settings
from archive.data.objects import ObjectStore, sop_instance_uid_of
from archive.data.registration import IanQueue, NotificationRepository
from archive.data.tiers import RestoreQueue, StudyTierState, TierIndex
from archive.errors import NothingToRestore
from archive.model.registration import RESTORE_NOTIFICATION_VERSION_BASE, Notification
from archive.model.tiers import (
    RESTORE_TIERS,
    RestoreTicket,
    StorageEvent,
    StorageEventKind,
    needs_restore,
    ready_by,
)

LOG = logging.getLogger("archive.tiers")


@dataclass(frozen=True)
class RestorePolicy:
    tier: str = "Bulk"  # Bulk (cheapest, Deep Archive within 48 h) or Standard (within 12 h)
    days: int = 7  # how long S3 keeps the restored copy readable

    def __post_init__(self) -> None:
        if self.tier not in RESTORE_TIERS:
            raise ValueError(f"restore tier must be one of {RESTORE_TIERS}, not {self.tier!r}")


class StorageTiers:
    def __init__(
        self,
        *,
        index: TierIndex,
        objects: ObjectStore,
        bucket: str,
        policy: RestorePolicy,
        restore_queue: RestoreQueue | None = None,
        notifications: NotificationRepository | None = None,
        ian_queue: IanQueue | None = None,
    ) -> None:
        self._index = index
        self._objects = objects
        self._bucket = bucket
        self.policy = policy
        self._restore_queue = restore_queue
        self._notifications = notifications
        self._ian_queue = ian_queue

    @classmethod
    def from_settings(cls, settings: Settings, objects: ObjectStore | None = None) -> StorageTiers:
        return cls(
            index=TierIndex(settings),
            objects=objects or ObjectStore(settings),
            bucket=settings.bucket,
            policy=RestorePolicy(settings.restore_tier, settings.restore_days),
            restore_queue=RestoreQueue(settings) if settings.restore_queue_url else None,
            notifications=NotificationRepository(),
            ian_queue=IanQueue(settings) if settings.ian_queue_url else None,
        )

    # --- S3 events -> the index --------------------------------------------------------------

    def apply(self, event: StorageEvent) -> str:
        """Follow one S3 event in the index; returns what it did (for the log)."""
        uid = sop_instance_uid_of(event.key)
        if event.bucket != self._bucket or uid is None:
            return "ignored: not an instance of the archive bucket"
        item = self._index.instance(uid)
        if item is None:
            return "ignored: instance not indexed"
        if event.version_id and item.s3_version_id and event.version_id != item.s3_version_id:
            return "ignored: another version"
        if event.kind is StorageEventKind.CLASS_CHANGED:
            self._index.record_class(item, event.storage_class or "STANDARD")
            return f"class {event.storage_class}"
        if event.kind is StorageEventKind.RESTORE_COMPLETED:
            changed = self._index.set_nearline(item, False, restored_until=event.restore_expiry)
            self._close_if_done(item.study_uid)
            return "restored" if changed else "restored already"
        if needs_restore(item.storage_class):  # RESTORE_EXPIRED: the readable copy is gone
            self._index.set_nearline(item, True, clear_restored=True)
            return "restore expired"
        return "ignored: restore expired of a class read directly"

    def _close_if_done(self, study_uid: str) -> None:
        state = self._index.study(study_uid)
        if state is None or not state.restore_state or state.nearline_instances > 0:
            return
        if not self._index.close_restore(state):
            return  # another event closed it
        LOG.info("restore of %s complete; notifying %s", study_uid, sorted(state.restore_requesters))
        self._notify_online(state)

    def _notify_online(self, state: StudyTierState) -> None:
        if self._notifications is None or self._ian_queue is None or not state.org_oid:
            return
        version = RESTORE_NOTIFICATION_VERSION_BASE + state.restores_completed + 1
        for ae_title in sorted(state.restore_requesters):
            notification = Notification(state.study_uid, version, ae_title, state.org_oid)
            if self._notifications.create(notification):
                self._ian_queue.send(notification)

    # --- restores ------------------------------------------------------------------------------

    def for_retrieval(self, study_uids: Iterable[str], requester: str | None) -> RestoreTicket | None:
        """Open (or join) the restore of each study a retrieval found NEARLINE instances in; the
        ticket with the latest ready time, for the retrieval's answer."""
        tickets = [t for uid in dict.fromkeys(study_uids) if (t := self._request(uid, requester)) is not None]
        return max(tickets, key=lambda t: t.ready_by) if tickets else None

    def restore_study(self, study_uid: str, requester: str | None = None) -> RestoreTicket:
        """The operator's restore of a whole study (admin CLI)."""
        ticket = self._request(study_uid, requester)
        if ticket is None:
            raise NothingToRestore(f"study {study_uid} has no instance that needs a restore")
        return ticket

    def _request(self, study_uid: str, requester: str | None) -> RestoreTicket | None:
        now = datetime.now(UTC)
        opened, state = self._index.request_restore(
            study_uid,
            requester=requester,
            tier=self.policy.tier,
            now=now,
            # Deep Archive's times: the slowest class the archive's lifecycle may use.
            ready_by=ready_by(now, "DEEP_ARCHIVE", self.policy.tier),
        )
        if state is None:
            return None
        if opened:
            if self._restore_queue is None:
                raise RuntimeError("missing configuration: the restore queue URL")
            self._restore_queue.request(study_uid)
            LOG.info("restore of %s requested (%s) by %s", study_uid, self.policy.tier, requester)
        return state.ticket(newly_requested=opened)

    def run_restore(self, study_uid: str) -> int:
        """The restore job: RestoreObject for every NEARLINE object of the study. Idempotent:
        objects restored or being restored already are skipped by S3. Returns how many started."""
        started = 0
        for instance in self._index.nearline_instances(study_uid):
            if self._objects.restore(
                instance.s3_key, instance.s3_version_id, days=self.policy.days, tier=self.policy.tier
            ):
                started += 1
        self._index.restoring(study_uid)
        LOG.info("restore of %s: %d RestoreObject requests started", study_uid, started)
        return started

    def state(self, study_uid: str) -> StudyTierState | None:
        return self._index.study(study_uid)
