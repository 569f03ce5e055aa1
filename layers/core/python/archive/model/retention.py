"""Legal retention as domain values: rules per organisation and study type, legal holds, and
the arithmetic of a retention end (docs/retention.md)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

ANY_STUDY_TYPE = "*"
# The Object Lock modes S3 knows; production uses COMPLIANCE (no one can shorten or lift it).
LOCK_MODES = ("COMPLIANCE", "GOVERNANCE")


@dataclass(frozen=True)
class RetentionRule:
    """How long an organisation must keep a study type (a modality, or ``*`` for any), counted
    from the study date. ``days`` exists for short rules (tests, local runs) beside ``years``."""

    org_oid: str
    study_type: str
    years: int
    days: int = 0
    # Whether a 113039 rejection note may ask for destruction before the retention end.
    allow_early_destruction: bool = False

    def end_for(self, study_date: date) -> datetime:
        """The retention end of a study of this type with this study date (midnight UTC)."""
        try:
            start = study_date.replace(year=study_date.year + self.years)
        except ValueError:  # 29 February into a year without one
            start = study_date.replace(year=study_date.year + self.years, day=28)
        end = start + timedelta(days=self.days)
        return datetime(end.year, end.month, end.day, tzinfo=UTC)


def rule_for(rules: list[RetentionRule], study_type: str | None) -> RetentionRule | None:
    """The organisation's rule for this study type, else its ``*`` rule, else none."""
    by_type = {rule.study_type: rule for rule in rules}
    return (study_type and by_type.get(study_type)) or by_type.get(ANY_STUDY_TYPE)


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
