"""Legal retention: the Object Lock each stored object gets, each study's retention end, and
legal holds (docs/retention.md).

At C-STORE the listener asks ``lock_for`` before its PUT: the organisation's rule for the study
type (the modality) gives the retention end from the study date; the object is locked until then
(at least ``minimum_lock`` from now), and the study's retention end is raised to it, never lowered.
A study without a rule keeps the bucket's default retention and no retention end: it is never due.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from archive.config import Settings
from archive.data.objects import ObjectStore
from archive.data.retention import RetentionJobQueue, RetentionRepository
from archive.data.xds_registry import XdsRegistry
from archive.dicom.instance import InstanceHeader
from archive.errors import ConfigurationError, StorageFailure
from archive.model.organisations import OrganisationInfo
from archive.model.retention import (
    JOB_PATIENT,
    JOB_RULE,
    LOCK_MODES,
    ExpiryVerdict,
    LegalHold,
    ObjectLock,
    RetentionBasis,
    RetentionEnds,
    RetentionJob,
    RetentionRule,
    StudyFacts,
    StudyRetention,
    expiry_rejection_verdict,
    parse_study_date,
    patient_target,
    retention_ends,
    rule_for,
    rules_for_study,
    study_target,
)
from archive.services.cache import TtlCache

RULES_TTL_SECONDS = 60.0
# How long the listener trusts what it read about a study's (or its patient's) holds: a hold placed
# reaches objects stored from this long after on at PUT; place_hold itself covers those indexed.
HOLDS_TTL_SECONDS = 60.0
KNOWN_ENDS = 10_000
# How long the listener trusts what it read of a patient's death and birth (death rules only).
PATIENT_DATES_TTL_SECONDS = 60.0
# The most object versions (or studies without objects) one retention job message handles by
# default (Settings.retention_page_objects); the rest goes on in a continuation message, so no
# invocation does unbounded work.
JOB_PAGE_OBJECTS = 200


class RetentionService:
    def __init__(
        self,
        repository: RetentionRepository,
        objects: ObjectStore,
        *,
        lock_mode: str,
        minimum_lock: timedelta,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        jobs: RetentionJobQueue | None = None,
        page_objects: int = JOB_PAGE_OBJECTS,
        registry: XdsRegistry | None = None,
    ) -> None:
        if lock_mode not in LOCK_MODES:
            raise ConfigurationError(f"Object Lock mode must be one of {LOCK_MODES}, not {lock_mode!r}")
        self._repository = repository
        self._objects = objects
        self._lock_mode = lock_mode
        self._minimum_lock = minimum_lock
        self._clock = clock
        self._lock = threading.Lock()
        self._rules: TtlCache[str, list[RetentionRule]] = TtlCache(RULES_TTL_SECONDS, max_entries=KNOWN_ENDS)
        # The retention end this process has written per study: later instances skip the write.
        self._ends: dict[str, datetime] = {}
        self._holds: TtlCache[tuple[str, str], bool] = TtlCache(HOLDS_TTL_SECONDS, max_entries=KNOWN_ENDS)
        self._patient_dates: TtlCache[str, tuple[str | None, str | None]] = TtlCache(
            PATIENT_DATES_TTL_SECONDS, max_entries=KNOWN_ENDS
        )
        self._jobs = jobs
        self._page_objects = max(1, page_objects)
        # Where a study's manifests are named (their locks grow and are held with the study's).
        self._registry = registry

    @classmethod
    def configured(
        cls,
        settings: Settings,
        objects: ObjectStore,
        *,
        jobs: RetentionJobQueue | None = None,
        page_objects: int = JOB_PAGE_OBJECTS,
        registry: XdsRegistry | None = None,
    ) -> RetentionService:
        """The service with the deployment's Object Lock mode and minimum lock (``settings``)."""
        return cls(
            RetentionRepository(),
            objects,
            lock_mode=settings.object_lock_mode,
            minimum_lock=timedelta(seconds=settings.minimum_lock_seconds),
            jobs=jobs,
            page_objects=page_objects,
            registry=registry,
        )

    # --- at store time ---------------------------------------------------------------------

    def rules_of(self, org_oid: str) -> list[RetentionRule]:
        rules = self._rules.get(org_oid, self._repository.rules_of)
        assert rules is not None
        return rules

    def lock_for(
        self, header: InstanceHeader, org: OrganisationInfo, patient_key: str | None = None
    ) -> ObjectLock | None:
        """The Object Lock for this object's PUT, or None (the bucket default) without a rule."""
        rule = rule_for(self.rules_of(org.oid), header.attributes.get("Modality"))
        if rule is None:
            return None
        now = self._clock()
        study_date = parse_study_date(header.attributes.get("StudyDate")) or date(
            now.year, now.month, now.day
        )
        death = birth = None
        if rule.basis is RetentionBasis.DEATH:
            death_value, birth_value = self._dates_of(patient_key)
            death = parse_study_date(death_value)
            birth = parse_study_date(birth_value or header.attributes.get("PatientBirthDate"))
        ends = retention_ends(rule, study_date, death=death, birth=birth)
        with self._lock:
            known = self._ends.get(header.study_uid)
        if ends.end is not None and ends.basis is not None and (known is None or known < ends.end):
            self._repository.extend_study(header.study_uid, ends.end, ends.basis)
            with self._lock:
                self._ends[header.study_uid] = ends.end
                while len(self._ends) > KNOWN_ENDS:
                    self._ends.pop(next(iter(self._ends)))
        return ObjectLock(self._lock_mode, max(ends.lock_end, now + self._minimum_lock))

    def _dates_of(self, patient_key: str | None) -> tuple[str | None, str | None]:
        """(death, birth) of the patient, cached PATIENT_DATES_TTL_SECONDS (death rules only)."""
        if patient_key is None:
            return None, None
        dates = self._patient_dates.get(patient_key, self._repository.patient_dates)
        assert dates is not None
        return dates

    def held(self, study_uid: str, patient_key: str) -> bool:
        """Whether a legal hold names the study or its patient now: the PUT of an object stored
        into a held study sets S3's legal hold on it (cached HOLDS_TTL_SECONDS per study)."""
        return bool(
            self._holds.get(
                (study_uid, patient_key),
                lambda key: self._repository.has_active_hold([study_target(key[0]), patient_target(key[1])]),
            )
        )

    # --- 113039 rejection notes (IOCM) -----------------------------------------------------

    def expiry_verdict(self, study_uid: str) -> ExpiryVerdict:
        """May a 113039 note ask for this study's destruction now (its organisation's rules)?"""
        study = self._repository.study_retention(study_uid)
        if study is None or not study.org_oid:
            return ExpiryVerdict.NOT_ALLOWED
        return expiry_rejection_verdict(
            self._repository.rules_of(study.org_oid), study.modalities, study.retention_end, self._clock()
        )

    def request_destruction(self, study_uid: str, note_uid: str) -> bool:
        """An accepted 113039 note: a study with no visible instance left is due for the
        destruction job from now on (the archive destroys whole studies; one with instances the
        note did not list only has those hidden). True when the study became due."""
        study = self._repository.study_retention(study_uid)
        if study is None or study.visible_instances > 0:
            return False
        self._repository.request_destruction(study_uid, self._clock(), note_uid)
        with self._lock:
            self._ends.pop(study_uid, None)
        return True

    # --- rules and queries (admin CLI) -----------------------------------------------------

    def set_rule(self, rule: RetentionRule) -> None:
        if rule.years < 0 or rule.days < 0 or (rule.years == 0 and rule.days == 0):
            raise ConfigurationError("a retention rule needs a positive number of years or days")
        self._repository.set_rule(rule)

    def grow_rule(self, org_oid: str, study_type: str, *, by: str | None = None) -> RetentionJob:
        """Start the job that lengthens, never shortens, what a (grown) rule covers already."""
        if not any(r.study_type == study_type for r in self._repository.rules_of(org_oid)):
            raise ConfigurationError(f"no rule for {study_type} of {org_oid}")
        return self.start_job(JOB_RULE, f"{org_oid}|{study_type}", by=by, reason="rule set")

    def start_job(self, kind: str, target: str, *, by: str | None, reason: str | None) -> RetentionJob:
        """Record a retention job and queue its first page (run by the extend_retention function)."""
        if self._jobs is None:
            raise ConfigurationError("retention jobs need the retention queue (RETENTION_QUEUE_URL)")
        job = RetentionJob(uuid.uuid4().hex, kind, target, "RUNNING", self._clock(), by, reason)
        self._repository.start_job(job)
        self._jobs.send({"job_id": job.job_id, "kind": kind, "target": target, "page": 0, "cursor": None})
        return job

    def job(self, job_id: str) -> RetentionJob | None:
        return self._repository.job(job_id)

    def run_job_page(self, message: dict[str, Any]) -> dict[str, Any]:
        """One page of a retention job: up to ``page_objects`` object versions (or studies without
        any) from the message's cursor; each study's retention end is raised (never lowered, but
        see ``RetentionRepository.extend_study`` for death rules) and each object's retain-until
        lengthened to its rule's lock end, keeping its mode. The next page goes out as a new
        message before this one is counted; a page counted already (a redelivery) does nothing,
        and the work itself is idempotent (an object locked as long is skipped after one HEAD)."""
        job_id, kind, target, page = message["job_id"], message["kind"], message["target"], message["page"]
        job = self._repository.job(job_id)
        if job is None or job.pages > page:
            return {"job_id": job_id, "page": page, "skipped": True}
        cursor = message.get("cursor") or {}
        index_cursor, study_uid, object_cursor = (
            cursor.get("index"),
            cursor.get("study"),
            cursor.get("objects"),
        )
        # No cursor after a study means the index has no more (not "from the start").
        exhausted = bool(cursor.get("exhausted"))
        budget = self._page_objects
        studies = changed = extended = 0
        done = False
        plan: _StudyPlan | None = None
        while budget > 0:
            if study_uid is None:
                if exhausted:
                    done = True
                    break
                study_uid, index_cursor = self._repository.next_study(kind, target, index_cursor)
                exhausted = index_cursor is None
                if study_uid is None:
                    done = True
                    break
                object_cursor = None
                plan = self._plan(kind, target, study_uid)
                if plan is None:
                    study_uid = None
                    budget -= 1
                    continue
                studies += 1
                changed += int(self._apply_end(kind, plan))
            elif plan is None:
                plan = self._plan(kind, target, study_uid)
                if plan is None:
                    study_uid = None
                    continue
            objects, object_cursor = self._repository.objects_page(study_uid, object_cursor, budget)
            budget -= max(1, len(objects))
            for key, version, modality in objects:
                ends = plan.ends_for(modality)
                if ends is None:
                    continue
                current = self._objects.retention(key, version)
                if current is not None and current.retain_until >= ends.lock_end:
                    continue
                mode = current.mode if current is not None else self._lock_mode
                self._objects.extend_retention(key, version, ObjectLock(mode, ends.lock_end))
                extended += 1
            if object_cursor is None:
                # The study's instances are done: its manifests and rejection notes follow them.
                extended += self._extend_archive_objects(study_uid, plan)
                study_uid, plan = None, None
        if not done:
            assert self._jobs is not None
            next_cursor = {
                "index": index_cursor,
                "exhausted": exhausted,
                "study": study_uid,
                "objects": object_cursor,
            }
            self._jobs.send({**message, "page": page + 1, "cursor": next_cursor})
        self._repository.count_page(
            job_id, page, studies=studies, changed=changed, objects=extended, done=done, at=self._clock()
        )
        return {
            "job_id": job_id,
            "page": page,
            "studies": studies,
            "objects_extended": extended,
            "done": done,
        }

    def _extend_archive_objects(self, study_uid: str, plan: _StudyPlan) -> int:
        """Lengthen the study's manifests and rejection notes to the longest lock its rules give
        its instances (they were locked like the study's first instance); how many changed."""
        ends = plan.study_ends()
        if not ends:
            return 0
        lock_end = max(e.lock_end for e in ends)
        extended = 0
        for key in self._repository.archive_object_keys(study_uid, self._registry):
            try:
                current = self._objects.retention(key)
            except StorageFailure:
                continue  # not stored here (a document of another repository)
            if current is not None and current.retain_until >= lock_end:
                continue
            mode = current.mode if current is not None else self._lock_mode
            self._objects.extend_retention(key, None, ObjectLock(mode, lock_end))
            extended += 1
        return extended

    def _hold_archive_objects(self, study_uid: str, *, on: bool) -> int:
        """S3's legal hold on (or off) the study's manifests and rejection notes; how many."""
        changed = 0
        for key in self._repository.archive_object_keys(study_uid, self._registry):
            try:
                self._objects.set_legal_hold(key, None, on=on)
            except StorageFailure:
                continue  # not stored here
            changed += 1
        return changed

    def _plan(self, kind: str, target: str, study_uid: str) -> _StudyPlan | None:
        facts = self._repository.study_facts(study_uid)
        if facts is None or not facts.org_oid or facts.start is None:
            return None
        rules = self._repository.rules_of(facts.org_oid)
        only = target.split("|", 1)[1] if kind == JOB_RULE else None
        return _StudyPlan(facts, rules, only)

    def _apply_end(self, kind: str, plan: _StudyPlan) -> bool:
        """Raise the study's retention end to what its rules give now; True when it changed."""
        ends = plan.study_ends()
        if not ends:
            return False
        if any(e.end is None for e in ends):
            # Never due (a death rule, the death and the birth unknown): a study whose end came
            # from a death that was retracted leaves the index; no other end is touched.
            death_rules = any(r.basis is RetentionBasis.DEATH for r in plan.applying())
            if kind == JOB_PATIENT and death_rules:
                return self._repository.forget_death_end(plan.facts.study_uid)
            return False
        latest = max(ends, key=lambda e: e.end or datetime.min.replace(tzinfo=UTC))
        assert latest.end is not None and latest.basis is not None
        return self._repository.extend_study(
            plan.facts.study_uid, latest.end, latest.basis, over_death=kind == JOB_PATIENT, existing=True
        )

    def retention_of(self, study_uid: str) -> StudyRetention | None:
        return self._repository.study_retention(study_uid)

    def studies_due(self, until: datetime) -> list[tuple[str, datetime]]:
        """Studies whose retention ends by ``until``, from the index (no scan)."""
        return list(self._repository.studies_due(until))

    # --- legal holds -----------------------------------------------------------------------

    def place_hold(
        self, *, by: str, reason: str, study_uid: str | None = None, patient_key: str | None = None
    ) -> tuple[LegalHold, int]:
        """Hold a study, or every study of a patient: no destruction until released.

        Every existing object version of the held studies gets S3's Object Lock legal hold, so S3
        itself refuses to delete it. Returns the hold and how many objects were put on hold.
        """
        target, studies = self._target(study_uid, patient_key)
        hold = LegalHold(target, uuid.uuid4().hex, by, reason, self._clock())
        self._repository.add_hold(hold)
        objects = 0
        for uid in studies:
            self._repository.count_hold(uid, 1)
            for key, version in self._repository.objects_of_study(uid):
                self._objects.set_legal_hold(key, version, on=True)
                objects += 1
            objects += self._hold_archive_objects(uid, on=True)
        return hold, objects

    def release_hold(
        self, hold_id: str, *, by: str, study_uid: str | None = None, patient_key: str | None = None
    ) -> int:
        """Release a hold; objects of a study no other hold names leave S3's legal hold.
        Returns how many objects left the legal hold."""
        target, studies = self._target(study_uid, patient_key)
        if not self._repository.release_hold(target, hold_id, by=by, at=self._clock()):
            raise ConfigurationError(f"no active hold {hold_id} on {target}")
        released = 0
        for uid in studies:
            if self._repository.count_hold(uid, -1) > 0:
                continue
            for key, version in self._repository.objects_of_study(uid):
                self._objects.set_legal_hold(key, version, on=False)
                released += 1
            released += self._hold_archive_objects(uid, on=False)
        return released

    def holds_on(self, *, study_uid: str | None = None, patient_key: str | None = None) -> list[LegalHold]:
        target, _ = self._target(study_uid, patient_key, resolve=False)
        return self._repository.holds_on(target)

    def _target(
        self, study_uid: str | None, patient_key: str | None, *, resolve: bool = True
    ) -> tuple[str, list[str]]:
        if (study_uid is None) == (patient_key is None):
            raise ConfigurationError("a legal hold names a study or a patient")
        if study_uid is not None:
            return study_target(study_uid), [study_uid]
        assert patient_key is not None
        studies = self._repository.studies_of_patient(patient_key) if resolve else []
        return patient_target(patient_key), studies


class _StudyPlan:
    """The rules that apply to one study's objects (per modality) and their ends, for a job."""

    def __init__(self, facts: StudyFacts, rules: list[RetentionRule], only: str | None) -> None:
        self.facts = facts
        self._rules = rules
        self._only = only  # a rule job: the study type of its rule; objects under others are left
        self._death = parse_study_date(facts.death_date)
        self._birth = parse_study_date(facts.birth_date)
        self._ends: dict[str | None, RetentionEnds | None] = {}

    def rule_of(self, modality: str | None) -> RetentionRule | None:
        rule = rule_for(self._rules, modality)
        if rule is None or (self._only is not None and rule.study_type != self._only):
            return None
        return rule

    def ends_for(self, modality: str | None) -> RetentionEnds | None:
        if modality not in self._ends:
            rule = self.rule_of(modality)
            start = self.facts.start
            assert start is not None
            self._ends[modality] = (
                None if rule is None else retention_ends(rule, start, death=self._death, birth=self._birth)
            )
        return self._ends[modality]

    def applying(self) -> list[RetentionRule]:
        found = rules_for_study(self._rules, self.facts.modalities)
        return [r for r in found if self._only is None or r.study_type == self._only]

    def study_ends(self) -> list[RetentionEnds]:
        found = (self.ends_for(m) for m in (self.facts.modalities or (None,)))
        return [e for e in found if e is not None]
