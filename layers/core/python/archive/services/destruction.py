"""Lawful destruction of studies whose retention has ended (docs/retention.md).

The job finds due studies through the retention-end index (never by listing the bucket), skips
held ones, records what it is about to destroy (every object's SHA-256), deletes every version
of every object without bypassing anything (S3 refuses a version whose lock has not expired:
then the study is left whole and reported), removes the index entries and records completion.
The destruction records are append-only and never destroyed. Each destroyed study is an audit
event: 110103 DICOM Instances Accessed, action D, the study with its instance count per SOP class
(life cycle 15, permanent erasure), the patient and who approved it (or the archive's schedule).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from archive.audit import messages as audit
from archive.data.destruction import DestructionRepository
from archive.data.objects import ObjectStore
from archive.data.retention import RetentionRepository
from archive.errors import RetentionLocked
from archive.model.retention import DestroyedObject, DestructionRecord
from archive.services.audit import AuditTrail


@dataclass
class DestructionRun:
    destroyed: list[DestructionRecord] = field(default_factory=list)
    held: list[str] = field(default_factory=list)
    locked: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, object]:
        return {
            "destroyed": [r.study_uid for r in self.destroyed],
            "held": self.held,
            "locked": self.locked,
        }


class DestructionService:
    def __init__(
        self,
        retention: RetentionRepository,
        destruction: DestructionRepository,
        objects: ObjectStore,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        audit_trail: AuditTrail | None = None,
    ) -> None:
        self._audit = audit_trail
        self._retention = retention
        self._destruction = destruction
        self._objects = objects
        self._clock = clock

    def run(self, *, approved_by: str | None = None, limit: int = 100) -> DestructionRun:
        """Destroy up to ``limit`` due, unheld studies; the rest wait for the next run."""
        outcome = DestructionRun()
        now = self._clock()
        for study_uid, end in self._retention.studies_due(now):
            if len(outcome.destroyed) >= limit:
                break
            study = self._retention.study_retention(study_uid)
            if study is None:
                continue
            if study.legal_holds > 0:
                outcome.held.append(study_uid)
                continue
            try:
                outcome.destroyed.append(
                    self._destroy(study_uid, end, study.org_oid, study.patient_key, approved_by)
                )
            except RetentionLocked:
                outcome.locked.append(study_uid)
        return outcome

    def _destroy(
        self,
        study_uid: str,
        end: datetime,
        org_oid: str | None,
        patient_key: str | None,
        approved_by: str | None,
    ) -> DestructionRecord:
        instances = self._destruction.instances_of(study_uid)
        objects = tuple(
            DestroyedObject(i.s3_key, i.sha256, i.size, tuple(self._objects.versions_of(i.s3_key)))
            for i in instances
        )
        record = DestructionRecord(
            study_uid=study_uid,
            org_oid=org_oid,
            patient_key=patient_key,
            retention_end=end,
            destroyed_at=self._clock(),
            instance_count=len(instances),
            total_bytes=sum(i.size for i in instances),
            objects=objects,
            approved_by=approved_by,
        )
        self._destruction.record(record, "PLANNED")
        for obj in objects:
            for version in obj.versions:
                self._objects.delete_version(obj.key, version)
        self._destruction.remove_index_entries(study_uid, instances)
        self._destruction.record(record, "COMPLETED")
        if self._audit is not None:
            classes: dict[str, int] = {}
            for i in instances:
                classes[i.sop_class_uid] = classes.get(i.sop_class_uid, 0) + 1
            self._audit.record(
                audit.instances_accessed(
                    source=self._audit.source,
                    action=audit.Action.DELETE,
                    outcome=audit.Outcome.SUCCESS,
                    user=audit.ActiveParticipant(approved_by or self._audit.source.source_id, True),
                    patient_key=patient_key or "-",
                    studies=[audit.study(study_uid, classes, lifecycle="15")],
                    outcome_description=(
                        f"destroyed at the end of retention ({end.date().isoformat()}): "
                        f"{len(instances)} instances, {record.total_bytes} bytes"
                    ),
                )
            )
        return record
