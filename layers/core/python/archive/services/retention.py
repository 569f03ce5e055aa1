"""Legal retention: the Object Lock each stored object gets, each study's retention end, and
legal holds (docs/retention.md).

At C-STORE the listener asks ``lock_for`` before its PUT: the organisation's rule for the study
type (the modality) gives the retention end from the study date; the object is locked until then
(at least ``minimum_lock`` from now), and the study's retention end is raised to it, never lowered.
A study without a rule keeps the bucket's default retention and no retention end: it is never due.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

from archive.data.objects import ObjectStore
from archive.data.retention import RetentionRepository
from archive.dicom.instance import InstanceHeader
from archive.errors import ConfigurationError
from archive.model.organisations import OrganisationInfo
from archive.model.retention import (
    ANY_STUDY_TYPE,
    LOCK_MODES,
    ExpiryVerdict,
    LegalHold,
    ObjectLock,
    RetentionRule,
    StudyRetention,
    expiry_rejection_verdict,
    parse_study_date,
    patient_target,
    rule_for,
    study_target,
)

RULES_TTL_SECONDS = 60.0
# How long the listener trusts what it read about a study's (or its patient's) holds: a hold placed
# reaches objects stored from this long after on at PUT; place_hold itself covers those indexed.
HOLDS_TTL_SECONDS = 60.0
KNOWN_ENDS = 10_000


class RetentionService:
    def __init__(
        self,
        repository: RetentionRepository,
        objects: ObjectStore,
        *,
        lock_mode: str,
        minimum_lock: timedelta,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if lock_mode not in LOCK_MODES:
            raise ConfigurationError(f"Object Lock mode must be one of {LOCK_MODES}, not {lock_mode!r}")
        self._repository = repository
        self._objects = objects
        self._lock_mode = lock_mode
        self._minimum_lock = minimum_lock
        self._clock = clock
        self._lock = threading.Lock()
        self._rules: dict[str, tuple[float, list[RetentionRule]]] = {}
        # The retention end this process has written per study: later instances skip the write.
        self._ends: dict[str, datetime] = {}
        self._holds: dict[tuple[str, str], tuple[float, bool]] = {}

    # --- at store time ---------------------------------------------------------------------

    def rules_of(self, org_oid: str) -> list[RetentionRule]:
        now = time.monotonic()
        with self._lock:
            cached = self._rules.get(org_oid)
        if cached is not None and now - cached[0] < RULES_TTL_SECONDS:
            return cached[1]
        rules = self._repository.rules_of(org_oid)
        with self._lock:
            self._rules[org_oid] = (now, rules)
        return rules

    def lock_for(self, header: InstanceHeader, org: OrganisationInfo) -> ObjectLock | None:
        """The Object Lock for this object's PUT, or None (the bucket default) without a rule."""
        rule = rule_for(self.rules_of(org.oid), header.attributes.get("Modality"))
        if rule is None:
            return None
        now = self._clock()
        study_date = parse_study_date(header.attributes.get("StudyDate")) or date(
            now.year, now.month, now.day
        )
        end = rule.end_for(study_date)
        lock_end = rule.lock_end_for(study_date)
        with self._lock:
            known = self._ends.get(header.study_uid)
        if known is None or known < end:
            self._repository.extend_study(header.study_uid, end)
            with self._lock:
                self._ends[header.study_uid] = end
                while len(self._ends) > KNOWN_ENDS:
                    self._ends.pop(next(iter(self._ends)))
        return ObjectLock(self._lock_mode, max(lock_end, now + self._minimum_lock))

    def held(self, study_uid: str, patient_key: str) -> bool:
        """Whether a legal hold names the study or its patient now: the PUT of an object stored
        into a held study sets S3's legal hold on it (cached HOLDS_TTL_SECONDS per study)."""
        key = (study_uid, patient_key)
        now = time.monotonic()
        with self._lock:
            cached = self._holds.get(key)
        if cached is not None and now - cached[0] < HOLDS_TTL_SECONDS:
            return cached[1]
        held = self._repository.has_active_hold([study_target(study_uid), patient_target(patient_key)])
        with self._lock:
            self._holds[key] = (now, held)
            while len(self._holds) > KNOWN_ENDS:
                self._holds.pop(next(iter(self._holds)))
        return held

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

    def extend_locks(self, org_oid: str, study_type: str) -> dict[str, int]:
        """Lengthen, never shorten, what a (grown) rule covers: each study's retention end and each
        stored object version's retain-until. The studies come from indexes (per organisation and
        study type); an object already locked as long is left alone, so a rerun after a stop
        resumes where it stopped and a second run changes nothing."""
        rules = self._repository.rules_of(org_oid)
        rule = next((r for r in rules if r.study_type == study_type), None)
        if rule is None:
            raise ConfigurationError(f"no rule for {study_type} of {org_oid}")
        own_types = {r.study_type for r in rules} - {ANY_STUDY_TYPE}
        studies = extended = 0
        for study_uid, study_date in self._repository.studies_under_rule(org_oid, study_type):
            start = parse_study_date(study_date)
            if start is None:
                continue  # not in the date indexes' terms; its objects keep their lock
            studies += 1
            self._repository.extend_study(study_uid, rule.end_for(start))
            lock_end = rule.lock_end_for(start)
            for key, version, modality in self._repository.objects_by_modality(study_uid):
                if study_type == ANY_STUDY_TYPE and modality in own_types:
                    continue  # its own modality's rule decides
                current = self._objects.retention(key, version)
                if current is not None and current.retain_until >= lock_end:
                    continue
                mode = current.mode if current is not None else self._lock_mode
                self._objects.extend_retention(key, version, ObjectLock(mode, lock_end))
                extended += 1
        return {"studies": studies, "objects_extended": extended}

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
