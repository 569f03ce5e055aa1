"""Lawful destruction of studies whose retention has ended (docs/retention.md).

The job finds due studies through the retention-end index (never by listing the bucket), skips
held ones, records what it is about to destroy (every object's SHA-256), deletes every version
of every object without bypassing anything (S3 refuses a version whose lock has not expired:
then the study is left whole and reported), removes the index entries and records completion.
The destruction records are append-only and never destroyed. Each destroyed study is an audit
event: 110103 DICOM Instances Accessed, action D, the study with its instance count per SOP class
(life cycle 15, permanent erasure), the patient and who approved it (or the archive's schedule).

A destroyed study's XDS registry entries are Deprecated in the same run (consumers no longer find
it; one holding an entry's ID learns it is gone) and removed from the registry once the policy's
delay has passed (``registry_removal``), by a later run that finds them through an index.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from archive.audit import messages as audit
from archive.data.destruction import DestructionRepository
from archive.data.objects import ObjectStore
from archive.data.registration import RegistryRemovals
from archive.data.retention import RetentionRepository
from archive.data.xds_registry import XdsRegistry
from archive.errors import RetentionLocked
from archive.model.retention import DestroyedObject, DestructionRecord
from archive.services.audit import AuditTrail


@dataclass
class DestructionRun:
    destroyed: list[DestructionRecord] = field(default_factory=list)
    held: list[str] = field(default_factory=list)
    locked: list[str] = field(default_factory=list)
    registry_removed: list[str] = field(default_factory=list)  # studies whose entries left the registry

    def summary(self) -> dict[str, object]:
        return {
            "destroyed": [r.study_uid for r in self.destroyed],
            "held": self.held,
            "locked": self.locked,
            "registry_removed": self.registry_removed,
        }


@dataclass(frozen=True)
class RegistryPolicy:
    """Where a destroyed study's registry entries are, and how long they stay Deprecated."""

    registry: XdsRegistry
    removals: RegistryRemovals
    removal_delay: timedelta


class DestructionService:
    def __init__(
        self,
        retention: RetentionRepository,
        destruction: DestructionRepository,
        objects: ObjectStore,
        *,
        registry: RegistryPolicy | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        audit_trail: AuditTrail | None = None,
    ) -> None:
        self._audit = audit_trail
        self._retention = retention
        self._destruction = destruction
        self._objects = objects
        self._registry = registry
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
                    self._destroy(
                        study_uid,
                        end,
                        study.org_oid,
                        study.patient_key,
                        approved_by,
                        rejection_note=study.early_destruction_note,
                    )
                )
            except RetentionLocked:
                outcome.locked.append(study_uid)
        # Never in the run that deprecated them: consumers see them Deprecated first, whatever the delay.
        outcome.registry_removed = self._remove_registry_entries(
            skip={r.study_uid for r in outcome.destroyed}
        )
        return outcome

    def _deprecate_registry_entries(self, study_uid: str, destroyed_at: datetime) -> dict[str, object]:
        """Deprecate every registry entry of the study; the record's registry fields."""
        if self._registry is None:
            return {}
        patient_id, current = self._registry.removals.study_entries(study_uid)
        if not patient_id:
            return {}
        documents = self._registry.registry.study_documents(patient_id, study_uid)
        entries = tuple(sorted({d.entry_uuid for d in documents} | ({current} if current else set())))
        self._registry.registry.deprecate([d.entry_uuid for d in documents])
        due = destroyed_at + self._registry.removal_delay
        self._registry.removals.destroyed(study_uid, entries, due)
        return {"registry_entries": entries, "registry_removal_due": due if entries else None}

    def _remove_registry_entries(self, *, skip: set[str]) -> list[str]:
        """Remove the Deprecated entries of destroyed studies whose delay has passed."""
        if self._registry is None:
            return []
        done = []
        for study_uid, entries in list(self._registry.removals.due(self._clock())):
            if study_uid in skip:
                continue
            self._registry.registry.remove_documents(entries)
            for record in self._destruction.records_of(study_uid):
                if record.registry_removed_at is None and set(entries) <= set(record.registry_entries):
                    self._destruction.registry_removed(record, self._clock())
            self._registry.removals.removed(study_uid)
            done.append(study_uid)
        return done

    def _destroy(
        self,
        study_uid: str,
        end: datetime,
        org_oid: str | None,
        patient_key: str | None,
        approved_by: str | None,
        *,
        rejection_note: str | None = None,
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
            rejection_note=rejection_note,
        )
        self._destruction.record(record, "PLANNED")
        for obj in objects:
            for version in obj.versions:
                self._objects.delete_version(obj.key, version)
        self._destruction.remove_index_entries(study_uid, instances)
        record = replace(record, **self._deprecate_registry_entries(study_uid, record.destroyed_at))  # type: ignore[arg-type]
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
