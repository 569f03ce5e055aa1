"""Data access for retention: rules in the configuration registry, each study's retention end
(sparse, sharded GSI by_retention_end) and legal holds."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from pynamodb.exceptions import DoesNotExist, UpdateError

from archive.config import Settings
from archive.data.models import (
    Instance,
    LegalHoldItem,
    Patient,
    RetentionJobItem,
    RetentionRuleItem,
    Series,
    Study,
    conditional_check_failed,
)
from archive.data.objects import manifest_key
from archive.data.registration import _Queue
from archive.data.rejections import rejection_note_key
from archive.data.xds_registry import XdsRegistry
from archive.model.retention import (
    ANY_STUDY_TYPE,
    JOB_PATIENT,
    EndBasis,
    ExpiryRejection,
    LegalHold,
    RetentionBasis,
    RetentionJob,
    RetentionRule,
    StudyFacts,
    StudyRetention,
)
from archive.model.xds import DocumentEntry

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
                basis=RetentionBasis(item.basis or RetentionBasis.STUDY_DATE),
                unknown_death_years_from_birth=int(item.unknown_death_years_from_birth or 0),
                approval_required=bool(item.approval_required),
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
            basis=rule.basis.value,
            unknown_death_years_from_birth=rule.unknown_death_years_from_birth,
            approval_required=rule.approval_required,
            updated_at=datetime.now(UTC),
        ).save()

    def remove_rule(self, org_oid: str, study_type: str) -> None:
        RetentionRuleItem(org_oid, study_type).delete()

    # --- a study's retention end -----------------------------------------------------------

    def extend_study(
        self,
        study_uid: str,
        end: datetime,
        basis: EndBasis = EndBasis.STUDY_DATE,
        *,
        over_death: bool = False,
        existing: bool = False,
    ) -> bool:
        """Set the study's retention end to ``end`` unless it is that late already (never shorten).

        True when it changed. The end is written with its shard, so the study enters the index.
        Two exceptions, both under a death rule: an end counted from the (now known) death replaces
        one counted from birth while the death was unknown, even an earlier one; and an end from
        birth does not replace one from the death unless ``over_death`` (the death was retracted).
        ``existing``: only a study item that exists (a job must not recreate a destroyed study; the
        listener's first instance may come before the study item does).
        """
        value = _iso(end)
        later = Study.retention_end.does_not_exist() | (Study.retention_end < value)
        if basis is EndBasis.DEATH:
            condition = later | (Study.retention_basis == EndBasis.BIRTH.value)
        elif basis is EndBasis.BIRTH and not over_death:
            condition = later & (
                Study.retention_basis.does_not_exist() | (Study.retention_basis != EndBasis.DEATH.value)
            )
        else:
            condition = later
        try:
            Study(study_uid).update(
                actions=[
                    Study.retention_end.set(value),
                    Study.retention_shard.set(retention_shard(study_uid)),
                    Study.retention_basis.set(basis.value),
                ],
                condition=condition & Study.study_uid.exists() if existing else condition,
            )
        except UpdateError as exc:
            if conditional_check_failed(exc):
                return False
            raise
        return True

    def forget_death_end(self, study_uid: str) -> bool:
        """The death was retracted and nothing else gives the study an end: it leaves the
        retention index (never due), which lengthens its retention; only an end from a death."""
        try:
            Study(study_uid).update(
                actions=[
                    Study.retention_end.remove(),
                    Study.retention_shard.remove(),
                    Study.retention_basis.remove(),
                ],
                condition=Study.retention_basis == EndBasis.DEATH.value,
            )
        except UpdateError as exc:
            if conditional_check_failed(exc):
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
            retention_basis=item.retention_basis,
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
            if conditional_check_failed(exc):
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

    def archive_object_keys(self, study_uid: str, registry: XdsRegistry | None) -> list[str]:
        """``study_archive_keys`` of the registry entries naming the study (its study items)."""
        return study_archive_keys(study_uid, registry.study_documents(study_uid) if registry else [])

    def objects_of_study(self, study_uid: str) -> list[tuple[str, str | None]]:
        """(key, version) of every instance object of the study, rejected ones included."""
        return [(i.s3_key, i.s3_version_id) for i in Instance.by_study.query(study_uid)]

    # --- retention jobs: studies and objects page by page ----------------------------------

    def next_study(
        self, kind: str, target: str, cursor: dict[str, Any] | None
    ) -> tuple[str | None, dict[str, Any] | None]:
        """The next study a job covers after ``cursor`` (an index's LastEvaluatedKey; None: from
        the start), from indexes (no scan): a patient's studies, an organisation's studies by date
        (those without a Study Date are in it too, under "0") or its series of a modality. With
        the cursor after it, None when the index has no more; (None, None) at the end."""
        if kind == JOB_PATIENT:
            results: Any = Study.by_patient.query(target, limit=1, last_evaluated_key=cursor)
        else:
            org_oid, study_type = target.split("|", 1)
            if study_type == ANY_STUDY_TYPE:
                results = Study.by_org_date.query(org_oid, limit=1, last_evaluated_key=cursor)
            else:
                results = Series.by_org_modality.query(
                    f"{org_oid}|{study_type}", limit=1, last_evaluated_key=cursor
                )
        for item in results:
            return item.study_uid, results.last_evaluated_key
        return None, None

    def study_facts(self, study_uid: str) -> StudyFacts | None:
        """What a study's retention is computed from: its organisation, date (or day of receipt),
        modalities and its patient's birth and death."""
        try:
            study = Study.get(study_uid, consistent_read=True)
        except DoesNotExist:
            return None
        death = birth = None
        if study.patient_key:
            try:
                patient = Patient.get(study.patient_key, consistent_read=True)
                death, birth = patient.death_date, patient.birth_date
            except DoesNotExist:
                pass
        received = study.first_received_at
        return StudyFacts(
            study_uid=study.study_uid,
            org_oid=study.org_oid,
            patient_key=study.patient_key,
            study_date=study.study_date,
            received_on=received.date() if received else None,
            modalities=tuple(sorted(study.modalities or ())),
            birth_date=birth or study.patient_birth_date,
            death_date=death,
        )

    def patient_dates(self, patient_key: str) -> tuple[str | None, str | None]:
        """(death date, birth date) of a patient as the index holds them (YYYYMMDD)."""
        try:
            patient = Patient.get(patient_key)
        except DoesNotExist:
            return None, None
        return patient.death_date, patient.birth_date

    def objects_page(
        self, study_uid: str, cursor: dict[str, Any] | None, limit: int
    ) -> tuple[list[tuple[str, str | None, str | None]], dict[str, Any] | None]:
        """Up to ``limit`` of the study's instance objects (key, version, modality of the series)
        after ``cursor``, rejected ones included; the cursor of the next page or None."""
        modalities = {s.series_uid: s.modality for s in Series.query(study_uid)}
        results: Any = Instance.by_study.query(study_uid, limit=limit, last_evaluated_key=cursor)
        page = [(i.s3_key, i.s3_version_id, modalities.get(i.series_uid)) for i in results]
        return page, results.last_evaluated_key if len(page) == limit else None

    # --- retention jobs: their progress ----------------------------------------------------

    def start_job(self, job: RetentionJob) -> None:
        RetentionJobItem(
            job.job_id,
            kind=job.kind,
            target=job.target,
            state="RUNNING",
            requested_by=job.requested_by,
            reason=job.reason,
            started_at=job.started_at,
        ).save(condition=RetentionJobItem.job_id.does_not_exist())

    def job(self, job_id: str) -> RetentionJob | None:
        try:
            item = RetentionJobItem.get(job_id, consistent_read=True)
        except DoesNotExist:
            return None
        return RetentionJob(
            job_id=item.job_id,
            kind=item.kind,
            target=item.target,
            state=item.state,
            requested_by=item.requested_by,
            reason=item.reason,
            started_at=item.started_at,
            updated_at=item.updated_at,
            finished_at=item.finished_at,
            pages=int(item.pages or 0),
            studies=int(item.studies or 0),
            studies_changed=int(item.studies_changed or 0),
            objects_extended=int(item.objects_extended or 0),
        )

    def count_page(
        self, job_id: str, page: int, *, studies: int, changed: int, objects: int, done: bool, at: datetime
    ) -> bool:
        """Count page ``page`` of the job once (False when it was counted before)."""
        actions: list[Any] = [
            RetentionJobItem.pages.set(page + 1),
            RetentionJobItem.studies.add(studies),
            RetentionJobItem.studies_changed.add(changed),
            RetentionJobItem.objects_extended.add(objects),
            RetentionJobItem.updated_at.set(at),
        ]
        if done:
            actions += [RetentionJobItem.state.set("DONE"), RetentionJobItem.finished_at.set(at)]
        try:
            RetentionJobItem(job_id).update(actions=actions, condition=RetentionJobItem.pages == page)
        except UpdateError as exc:
            if conditional_check_failed(exc):
                return False
            raise
        return True


class RetentionJobQueue(_Queue):
    """Page messages of retention jobs to the extend_retention function (docs/retention.md)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, settings.retention_queue_url, "retention")

    def send(self, page: dict[str, Any]) -> None:
        self._send(page, 0)


def study_archive_keys(study_uid: str, documents: Iterable[DocumentEntry]) -> list[str]:
    """Keys of the other objects the archive wrote for a study: the manifests of ``documents``
    (registry entries naming it; one whose document is stored elsewhere has no object here) and the
    rejection notes that hid its instances (revoked ones too), as the study row lists them. Each is
    written once; the retention job, legal holds and destruction all treat them as the study's."""
    keys = [manifest_key(d.unique_id) for d in documents]
    try:
        study = Study.get(study_uid, consistent_read=True, attributes_to_get=["rejection_notes"])
        keys += [rejection_note_key(n) for n in sorted(study.rejection_notes or ())]
    except DoesNotExist:
        pass
    return list(dict.fromkeys(keys))
