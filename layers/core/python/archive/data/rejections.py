"""Data access for IOCM rejections: the rejection records and the rejected flag on instance rows.

Hiding or restoring one instance is one DynamoDB transaction: the instance row (conditioned on
its current rejection state, so a repeat changes nothing) and the series and study counts.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from pynamodb.exceptions import DoesNotExist, PutError, TransactWriteError, UpdateError
from pynamodb.expressions.update import Action
from pynamodb.transactions import TransactWrite

from archive.config import Settings
from archive.data.index import instance_record
from archive.data.models import (
    Instance,
    Rejection,
    Series,
    Study,
    TransactionConnection,
    conditional_check_failed,
)
from archive.model.records import InstanceRecord
from archive.model.rejection import InstanceReference, RejectedInstance, RejectionRecord
from archive.model.tiers import NEARLINE

# Rejection notes are kept beside the instances, outside the prefix the index queue is told of:
# a note is evidence of a correction, not an instance of the study.
NOTE_PREFIX = "rejections/"


def rejection_note_key(note_uid: str) -> str:
    prefix = hashlib.sha256(note_uid.encode("ascii")).hexdigest()[:4]
    return f"{NOTE_PREFIX}{prefix}/{note_uid}.dcm"


class RejectionRepository(TransactionConnection):
    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    # --- rejection records -----------------------------------------------------------------

    def get(self, note_uid: str) -> RejectionRecord | None:
        try:
            return _record(Rejection.get(note_uid, consistent_read=True))
        except DoesNotExist:
            return None

    def create(self, record: RejectionRecord) -> bool:
        """Record a note (state APPLYING); False when a record of that note exists already."""
        item = Rejection(
            record.note_uid,
            code=record.code,
            org_oid=record.org_oid,
            sending_ae=record.sending_ae,
            received_at=record.received_at,
            references=[
                [r.study_uid, r.series_uid, r.sop_class_uid, r.sop_instance_uid] for r in record.references
            ],
            state=record.state,
            s3_key=record.s3_key,
            sha256=record.sha256,
        )
        try:
            item.save(condition=Rejection.note_uid.does_not_exist())
        except PutError as exc:
            if conditional_check_failed(exc):
                return False
            raise
        return True

    def set_state(
        self,
        note_uid: str,
        state: str,
        *,
        expected: str,
        revoked: tuple[datetime, str, str] | None = None,
    ) -> bool:
        """Move a record from ``expected`` to ``state`` (with when, by whom and why it was revoked);
        False when it was not in ``expected``."""
        actions: list[Action] = [Rejection.state.set(state)]
        if revoked is not None:
            at, by, reason = revoked
            actions += [
                Rejection.revoked_at.set(at),
                Rejection.revoked_by.set(by),
                Rejection.revoke_reason.set(reason),
            ]
        try:
            Rejection(note_uid).update(actions=actions, condition=Rejection.state == expected)
        except UpdateError as exc:
            if conditional_check_failed(exc):
                return False
            raise
        return True

    # --- the rejected flag on instances ----------------------------------------------------

    def hide(self, instance: InstanceRecord, *, code: str, note_uid: str) -> bool:
        """Mark an instance rejected and take it out of its series' and study's counts (its NEARLINE
        count too: C-FIND and IAN speak of the visible instances only).

        False when it was rejected already (by this note in an earlier attempt, or by another).
        """
        return self._transact(
            instance,
            [Instance.rejected.set(code), Instance.rejected_by.set(note_uid)],
            Instance.sop_instance_uid.exists() & Instance.rejected.does_not_exist(),
            delta=-1,
            # The study keeps its notes' UIDs (also after a revoke): destroyed with it.
            study_actions=[Study.rejection_notes.add({note_uid})],
        )

    def restore(self, instance: InstanceRecord, *, note_uid: str) -> bool:
        """Undo ``hide`` for an instance this note rejected; False when it is not so rejected."""
        return self._transact(
            instance,
            [Instance.rejected.remove(), Instance.rejected_by.remove()],
            Instance.rejected_by == note_uid,
            delta=1,
        )

    def _transact(
        self,
        instance: InstanceRecord,
        actions: list[Any],
        condition: Any,
        *,
        delta: int,
        study_actions: list[Any] | None = None,
    ) -> bool:
        # The NEARLINE counters move with the instance's visibility, conditioned on its availability
        # as read; when a storage event changed it meanwhile, read it again and retry.
        for _ in range(3):
            nearline = instance.nearline
            availability = (
                Instance.availability == NEARLINE if nearline else Instance.availability.does_not_exist()
            )
            series_actions: list[Any] = [
                Series.number_of_instances.add(delta),
                Series.rejected_instances.add(-delta),
            ]
            counts: list[Any] = [
                Study.number_of_instances.add(delta),
                Study.total_bytes.add(delta * instance.size),
                Study.rejected_instances.add(-delta),
                *(study_actions or []),
            ]
            if nearline:
                series_actions.append(Series.nearline_instances.add(delta))
                counts.append(Study.nearline_instances.add(delta))
            try:
                with TransactWrite(connection=self._connection()) as tx:
                    tx.update(
                        Instance(instance.sop_instance_uid),
                        actions=actions,
                        condition=condition & availability,
                    )
                    tx.update(Series(instance.study_uid, instance.series_uid), actions=series_actions)
                    tx.update(Study(instance.study_uid), actions=counts)
            except TransactWriteError as exc:
                reasons = [getattr(r, "code", None) for r in (exc.cancellation_reasons or [])]
                if reasons and reasons[0] == "ConditionalCheckFailed":
                    fresh = self._fresh(instance.sop_instance_uid)
                    if fresh is None or fresh.nearline == nearline:
                        return False  # the rejection state, not the availability, was not as expected
                    instance = fresh
                    continue
                raise
            return True
        return False

    @staticmethod
    def _fresh(sop_instance_uid: str) -> InstanceRecord | None:
        try:
            return instance_record(Instance.get(sop_instance_uid, consistent_read=True))
        except DoesNotExist:
            return None

    def rejected_in_study(self, study_uid: str) -> list[RejectedInstance]:
        """Every instance of the study a rejection note hides now (GSI by_study, filtered)."""
        return [
            RejectedInstance(
                sop_instance_uid=i.sop_instance_uid,
                sop_class_uid=i.sop_class_uid,
                study_uid=i.study_uid,
                series_uid=i.series_uid,
                code=i.rejected or "",
                note_uid=i.rejected_by or "",
            )
            for i in Instance.by_study.query(study_uid, filter_condition=Instance.rejected.exists())
        ]


def _record(item: Rejection) -> RejectionRecord:
    return RejectionRecord(
        note_uid=item.note_uid,
        code=item.code,
        org_oid=item.org_oid,
        sending_ae=item.sending_ae,
        received_at=item.received_at,
        references=tuple(InstanceReference(*ref) for ref in item.references or []),
        state=item.state,
        s3_key=item.s3_key,
        sha256=item.sha256,
        revoked_at=item.revoked_at,
        revoked_by=item.revoked_by,
        revoke_reason=item.revoke_reason,
    )
