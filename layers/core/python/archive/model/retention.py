"""Legal retention as domain values: rules per organisation and study type, legal holds, and
the arithmetic of a retention end (docs/retention.md)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum

ANY_STUDY_TYPE = "*"
# The Object Lock modes S3 knows; production uses COMPLIANCE (no one can shorten or lift it).
LOCK_MODES = ("COMPLIANCE", "GOVERNANCE")


class ExpiryRejection(StrEnum):
    """What a 113039 (Data Retention Policy Expired) rejection note may do under a rule; after
    dcm4chee-arc's "Allow Rejection For Data Retention Policy Expired" (NEVER, ONLY_EXPIRED, ALWAYS)."""

    NEVER = "NEVER"  # refused with 0xA775
    EXPIRED = "EXPIRED"  # only once the retention has ended, else 0xA776
    EARLY = "EARLY"  # also before: early destruction (the Object Lock covers only the rule's minimum)


class RetentionBasis(StrEnum):
    """What a rule counts its years from."""

    STUDY_DATE = "STUDY_DATE"
    # The patient's death when known (e.g. Finland: 12 years after death, 120 years from birth
    # while the death is not known); see ``retention_ends``.
    DEATH = "DEATH"


class EndBasis(StrEnum):
    """What a study's retention end in the index was counted from (Study.retention_basis)."""

    STUDY_DATE = "STUDY_DATE"
    DEATH = "DEATH"
    BIRTH = "BIRTH"  # a death rule, the death unknown: the years from birth stand in


class ExpiryVerdict(StrEnum):
    ACCEPTED = "ACCEPTED"
    NOT_ALLOWED = "NOT_ALLOWED"  # 0xA775
    NOT_EXPIRED = "NOT_EXPIRED"  # 0xA776


@dataclass(frozen=True)
class RetentionRule:
    """How long an organisation must keep a study type (a modality, or ``*`` for any), counted
    from the study date. ``days`` exists for short rules (tests, local runs) beside ``years``."""

    org_oid: str
    study_type: str
    years: int
    days: int = 0
    expiry_rejection: ExpiryRejection = ExpiryRejection.EXPIRED
    # Under an EARLY rule: the days from the study date no early destruction can shorten (the
    # Object Lock's retain-until; at least the archive's minimum lock from the time of storing).
    minimum_days: int = 0
    basis: RetentionBasis = RetentionBasis.STUDY_DATE
    # Under a death rule: while the death is not known, the end is this many years from birth
    # (0: none; a study of a patient without a known death or birth date is then never due).
    unknown_death_years_from_birth: int = 0
    # Destruction of such a study waits for an operator's recorded approval (who and why).
    approval_required: bool = False

    @property
    def allow_early_destruction(self) -> bool:
        return self.expiry_rejection is ExpiryRejection.EARLY

    def describe(self) -> str:
        """The rule as a destruction record names it, e.g. ``1.2.3 CT: 12 years from the study date``."""
        span = f"{self.years} years" + (f" {self.days} days" if self.days else "")
        if self.basis is RetentionBasis.DEATH:
            span += " from the patient's death"
            if self.unknown_death_years_from_birth:
                span += f" ({self.unknown_death_years_from_birth} years from birth while not known)"
        else:
            span += " from the study date"
        flags = [f"113039 {self.expiry_rejection.value}"]
        if self.approval_required:
            flags.append("approval required")
        return f"{self.org_oid} {self.study_type}: {span}; {', '.join(flags)}"

    def end_for(self, study_date: date) -> datetime:
        """The retention end of a study of this type with this study date (midnight UTC)."""
        try:
            start = study_date.replace(year=study_date.year + self.years)
        except ValueError:  # 29 February into a year without one
            start = study_date.replace(year=study_date.year + self.years, day=28)
        end = start + timedelta(days=self.days)
        return datetime(end.year, end.month, end.day, tzinfo=UTC)

    def lock_end_for(self, study_date: date) -> datetime:
        """Until when S3 must refuse deleting an object of such a study: the retention end, or
        under an EARLY rule only the minimum (early destruction must remain possible)."""
        if not self.allow_early_destruction:
            return self.end_for(study_date)
        end = study_date + timedelta(days=self.minimum_days)
        return datetime(end.year, end.month, end.day, tzinfo=UTC)


def _plus_years(start: date, years: int, days: int = 0) -> datetime:
    try:
        moved = start.replace(year=start.year + years)
    except ValueError:  # 29 February into a year without one
        moved = start.replace(year=start.year + years, day=28)
    end = moved + timedelta(days=days)
    return datetime(end.year, end.month, end.day, tzinfo=UTC)


@dataclass(frozen=True)
class RetentionEnds:
    """What a rule gives one study: its retention end in the index (None: never due) with what
    the end was counted from, and the retain-until of its objects' Object Lock."""

    end: datetime | None
    basis: EndBasis | None
    lock_end: datetime


def retention_ends(
    rule: RetentionRule, study_date: date, *, death: date | None = None, birth: date | None = None
) -> RetentionEnds:
    """The retention of a study under ``rule``, from what is known of its patient now.

    A death rule with the death known: the years from the death, but never before the years from
    the study date (what a lock set while the death was unknown already holds; this only matters
    for imaging after death). The death not known: the Object Lock covers the years from the study
    date (as if the death were at the study, the earliest a death-based end can be: a COMPLIANCE
    lock set longer could never be shortened when the death becomes known), and the index end is
    the rule's years from birth, or none (never due) without them or a birth date."""
    if rule.basis is RetentionBasis.STUDY_DATE:
        return RetentionEnds(rule.end_for(study_date), EndBasis.STUDY_DATE, rule.lock_end_for(study_date))
    floor = rule.end_for(study_date)
    if death is not None:
        end = max(_plus_years(death, rule.years, rule.days), floor)
        lock = end if not rule.allow_early_destruction else rule.lock_end_for(study_date)
        return RetentionEnds(end, EndBasis.DEATH, lock)
    lock = rule.lock_end_for(study_date)
    if birth is not None and rule.unknown_death_years_from_birth > 0:
        end = max(_plus_years(birth, rule.unknown_death_years_from_birth), floor)
        return RetentionEnds(end, EndBasis.BIRTH, lock)
    return RetentionEnds(None, None, lock)


def expiry_rejection_verdict(
    rules: list[RetentionRule],
    modalities: Iterable[str],
    retention_end: datetime | None,
    now: datetime,
) -> ExpiryVerdict:
    """May a 113039 note ask for the destruction of a study with these modalities now?

    Every rule that applies to one of the study's modalities must allow it: NEVER (or no rule at
    all: the archive does not know the study's retention) refuses; EXPIRED accepts only a study
    whose retention end has passed; EARLY accepts at any time."""
    applying = {rule_for(rules, m) for m in modalities} or {rule_for(rules, None)}
    if None in applying or retention_end is None:
        return ExpiryVerdict.NOT_ALLOWED
    kinds = {r.expiry_rejection for r in applying if r is not None}
    if ExpiryRejection.NEVER in kinds:
        return ExpiryVerdict.NOT_ALLOWED
    if ExpiryRejection.EXPIRED in kinds and retention_end > now:
        return ExpiryVerdict.NOT_EXPIRED
    return ExpiryVerdict.ACCEPTED


def rule_for(rules: list[RetentionRule], study_type: str | None) -> RetentionRule | None:
    """The organisation's rule for this study type, else its ``*`` rule, else none."""
    by_type = {rule.study_type: rule for rule in rules}
    return (study_type and by_type.get(study_type)) or by_type.get(ANY_STUDY_TYPE)


def rules_for_study(rules: list[RetentionRule], modalities: tuple[str, ...] | None) -> list[RetentionRule]:
    """The rules that govern a study's objects: one per modality in it (else the ``*`` rule), as at
    their PUTs; each rule once."""
    found = (rule_for(rules, m) for m in modalities or (None,))
    return list({(r.org_oid, r.study_type): r for r in found if r is not None}.values())


def parse_study_date(value: str | None) -> date | None:
    """DICOM DA (YYYYMMDD) to a date; None when absent or not a valid date."""
    if not value or len(value) < 8:
        return None
    try:
        return date(int(value[:4]), int(value[4:6]), int(value[6:8]))
    except ValueError:
        return None


@dataclass(frozen=True)
class ObjectLock:
    """The Object Lock a PUT sets: mode and the date before which no version may be deleted."""

    mode: str
    retain_until: datetime


@dataclass(frozen=True)
class LegalHold:
    """A hold on a study or on all of a patient's studies: nothing held is destroyed until it is
    released, whatever the retention says."""

    target: str  # "study:<Study Instance UID>" or "patient:<patient key>"
    hold_id: str
    placed_by: str
    reason: str
    placed_at: datetime
    released_at: datetime | None = None
    released_by: str | None = None

    @property
    def active(self) -> bool:
        return self.released_at is None


def study_target(study_uid: str) -> str:
    return f"study:{study_uid}"


def patient_target(patient_key: str) -> str:
    return f"patient:{patient_key}"


@dataclass(frozen=True)
class StudyRetention:
    """A study's retention as the index holds it."""

    study_uid: str
    org_oid: str | None
    patient_key: str | None
    retention_end: datetime | None
    legal_holds: int
    modalities: tuple[str, ...] = ()
    visible_instances: int = 0  # not hidden by rejection notes
    early_destruction_note: str | None = None  # a 113039 note asked for early destruction
    retention_basis: str | None = None  # what the end was counted from (EndBasis)


@dataclass(frozen=True)
class DestroyedObject:
    """One object of a destroyed study: its key, its SHA-256 and the versions deleted."""

    key: str
    sha256: str
    size: int
    versions: tuple[str, ...] = ()


@dataclass(frozen=True)
class DestructionRecord:
    """What was destroyed, under which retention, when and on whose approval. Kept forever."""

    study_uid: str
    org_oid: str | None
    patient_key: str | None
    retention_end: datetime
    destroyed_at: datetime
    instance_count: int
    total_bytes: int
    objects: tuple[DestroyedObject, ...]
    approved_by: str | None = None
    # The rules the study was kept under (``RetentionRule.describe``), when the organisation has any.
    rules: tuple[str, ...] = ()
    # The 113039 rejection note that asked for early destruction, if one did.
    rejection_note: str | None = None
    # The study's XDS registry entries: Deprecated at destruction, removed from the registry at
    # registry_removal_due (registry_removed_at once done).
    registry_entries: tuple[str, ...] = ()
    registry_removal_due: datetime | None = None
    registry_removed_at: datetime | None = None


@dataclass(frozen=True)
class StudyFacts:
    """What a study's retention is computed from, as the index holds it now."""

    study_uid: str
    org_oid: str | None
    patient_key: str | None
    study_date: str  # DICOM DA, or "0" / "" when the study has none
    received_on: date | None  # the day its first instance came: the start without a Study Date
    modalities: tuple[str, ...]
    birth_date: str | None
    death_date: str | None

    @property
    def start(self) -> date | None:
        """What a study-date rule counts from: the Study Date, else the day of receipt (as at store)."""
        return parse_study_date(self.study_date) or self.received_on


# Kinds of retention job (RetentionJob.kind).
JOB_RULE = "rule"
JOB_PATIENT = "patient"


@dataclass(frozen=True)
class RetentionJob:
    """A retention job: a grown rule (kind JOB_RULE, target "<org>|<study type>") or a patient whose
    death was recorded or retracted (kind JOB_PATIENT, target the patient key), run page by page."""

    job_id: str
    kind: str
    target: str
    state: str
    started_at: datetime
    requested_by: str | None = None
    reason: str | None = None
    updated_at: datetime | None = None
    finished_at: datetime | None = None
    pages: int = 0
    studies: int = 0
    studies_changed: int = 0
    objects_extended: int = 0


@dataclass(frozen=True)
class DestructionApproval:
    """An operator's approval to destroy a study whose rule requires one: who, why, when (UTC).
    Kept forever with the study's destruction records."""

    study_uid: str
    approved_by: str
    reason: str
    at: datetime
