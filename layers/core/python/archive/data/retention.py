"""Data access for retention: rules in the configuration registry, each study's retention end
(sparse, sharded GSI by_retention_end) and legal holds."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime

from pynamodb.exceptions import DoesNotExist, UpdateError

from archive.data.models import Instance, LegalHoldItem, RetentionRuleItem, Series, Study
from archive.model.retention import ANY_STUDY_TYPE, ExpiryRejection, LegalHold, RetentionRule, StudyRetention

RETENTION_SHARDS = 8


def retention_shard(study_uid: str) -> str:
    return str(int(hashlib.sha256(study_uid.encode("ascii")).hexdigest()[:4], 16) % RETENTION_SHARDS)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds")


class RetentionRepository:
    # --- rules -----------------------------------------------------------------------------

    def rules_of(self, org_oid: str) -> list[RetentionRule]:
        return [
            RetentionRule(
                org_oid=item.org_oid,
                study_type=item.study_type,
                years=int(item.years),
                days=int(item.days or 0),
                expiry_rejection=ExpiryRejection(
                    item.expiry_rejection
                    or (ExpiryRejection.EARLY if item.allow_early_destruction else ExpiryRejection.EXPIRED)
                ),
                minimum_days=int(item.minimum_days or 0),
            )
            for item in RetentionRuleItem.query(org_oid)
        ]

    def set_rule(self, rule: RetentionRule) -> None:
        RetentionRuleItem(
            rule.org_oid,
            rule.study_type,
            years=rule.years,
            days=rule.days,
            allow_early_destruction=rule.allow_early_destruction,
            expiry_rejection=rule.expiry_rejection.value,
            minimum_days=rule.minimum_days,
            updated_at=datetime.now(UTC),
        ).save()

    def remove_rule(self, org_oid: str, study_type: str) -> None:
        RetentionRuleItem(org_oid, study_type).delete()

    # --- a study's retention end -----------------------------------------------------------

    def extend_study(self, study_uid: str, end: datetime) -> bool:
        """Set the study's retention end to ``end`` unless it is that late already (never shorten).

        True when it changed. The end is written with its shard, so the study enters the index.
        """
        value = _iso(end)
        try:
            Study(study_uid).update(
                actions=[
                    Study.retention_end.set(value),
                    Study.retention_shard.set(retention_shard(study_uid)),
                ],
                condition=Study.retention_end.does_not_exist() | (Study.retention_end < value),
            )
        except UpdateError as exc:
            if getattr(exc, "cause_response_code", None) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def request_destruction(self, study_uid: str, at: datetime, note_uid: str) -> None:
        """A 113039 note asked for early destruction: the study is due from ``at`` (the one way a
        retention end goes down), and the note is kept on the study for the destruction record."""
        value = _iso(at)
        Study(study_uid).update(
            actions=[
                Study.retention_end.set(value),
                Study.retention_shard.set(retention_shard(study_uid)),
                Study.early_destruction_note.set(note_uid),
            ],
            condition=Study.study_uid.exists(),
        )

    def study_retention(self, study_uid: str) -> StudyRetention | None:
        try:
            item = Study.get(study_uid, consistent_read=True)
        except DoesNotExist:
            return None
        return StudyRetention(
            study_uid=item.study_uid,
            org_oid=item.org_oid,
            patient_key=item.patient_key,
            retention_end=datetime.fromisoformat(item.retention_end) if item.retention_end else None,
            legal_holds=int(item.legal_holds or 0),
            modalities=tuple(sorted(item.modalities or ())),
            visible_instances=int(item.number_of_instances or 0),
            early_destruction_note=item.early_destruction_note,
        )

    def studies_due(self, until: datetime) -> Iterator[tuple[str, datetime]]:
        """Studies whose retention ends at or before ``until``: one Query per shard, no scan."""
        for shard in range(RETENTION_SHARDS):
            for item in Study.by_retention_end.query(
                str(shard), range_key_condition=Study.retention_end <= _iso(until)
            ):
                assert item.retention_end is not None
                yield item.study_uid, datetime.fromisoformat(item.retention_end)

    # --- legal holds -----------------------------------------------------------------------

    def add_hold(self, hold: LegalHold) -> None:
        LegalHoldItem(
            hold.target,
            hold.hold_id,
            placed_by=hold.placed_by,
            reason=hold.reason,
            placed_at=hold.placed_at,
        ).save(condition=LegalHoldItem.hold_id.does_not_exist())

    def release_hold(self, target: str, hold_id: str, *, by: str, at: datetime) -> bool:
        """Mark a hold released; False when it was released already (or does not exist)."""
        try:
            LegalHoldItem(target, hold_id).update(
                actions=[LegalHoldItem.released_at.set(at), LegalHoldItem.released_by.set(by)],
                condition=LegalHoldItem.placed_by.exists() & LegalHoldItem.released_at.does_not_exist(),
            )
        except UpdateError as exc:
            if getattr(exc, "cause_response_code", None) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def holds_on(self, target: str) -> list[LegalHold]:
        return [
            LegalHold(
                target=item.target,
                hold_id=item.hold_id,
                placed_by=item.placed_by,
                reason=item.reason,
                placed_at=item.placed_at,
                released_at=item.released_at,
                released_by=item.released_by,
            )
            for item in LegalHoldItem.query(target, consistent_read=True)
        ]

    def has_active_hold(self, targets: list[str]) -> bool:
        """Whether any of the targets (study:..., patient:...) has a hold not released."""
        return any(
            True
            for target in targets
            for _ in LegalHoldItem.query(
                target, filter_condition=LegalHoldItem.released_at.does_not_exist(), consistent_read=True
            )
        )

    def count_hold(self, study_uid: str, delta: int) -> int:
        """Add ``delta`` to the study's count of active holds; the count after."""
        item = Study(study_uid)
        item.update(actions=[Study.legal_holds.add(delta)])
        return int(item.legal_holds or 0)

    def studies_of_patient(self, patient_key: str) -> list[str]:
        return [s.study_uid for s in Study.by_patient.query(patient_key)]

    def studies_under_rule(self, org_oid: str, study_type: str) -> Iterator[tuple[str, str]]:
        """(Study Instance UID, study date) of the studies a rule covers, from indexes (no scan):
        an organisation's studies by date for ``*``, its series by modality for a modality."""
        if study_type == ANY_STUDY_TYPE:
            for item in Study.by_org_date.query(org_oid):
                yield item.study_uid, item.study_date
            return
        seen: set[str] = set()
        for series in Series.by_org_modality.query(f"{org_oid}|{study_type}"):
            if series.study_uid not in seen:
                seen.add(series.study_uid)
                yield series.study_uid, series.study_date or ""

    def objects_by_modality(self, study_uid: str) -> list[tuple[str, str | None, str | None]]:
        """(key, version, modality of its series) of every instance object of the study."""
        modalities = {s.series_uid: s.modality for s in Series.query(study_uid)}
        return [
            (i.s3_key, i.s3_version_id, modalities.get(i.series_uid))
            for i in Instance.by_study.query(study_uid)
        ]

    def objects_of_study(self, study_uid: str) -> list[tuple[str, str | None]]:
        """(key, version) of every instance object of the study, rejected ones included."""
        return [(i.s3_key, i.s3_version_id) for i in Instance.by_study.query(study_uid)]
