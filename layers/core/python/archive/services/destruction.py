"""Lawful destruction of studies whose retention has ended (docs/retention.md).

The job finds due studies through the retention-end index (never by listing the bucket), skips
held ones, checks that S3 would let every version of every object of the study go (its instances,
its manifests and the rejection notes that hid its instances): if not, the study is left whole,
reported ``locked`` and the refusal audited (outcome 4), to be tried again. Otherwise it records
what it is about to destroy (every object's SHA-256), deletes every version without bypassing
anything, removes the index entries and records completion.
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
from archive.data.retention import RetentionRepository, study_archive_keys
from archive.data.xds_registry import XdsRegistry
from archive.errors import ArchiveError, RetentionLocked
from archive.model.retention import (
    DestroyedObject,
    DestructionApproval,
    DestructionRecord,
    RetentionRule,
    rules_for_study,
)
from archive.model.xds import DocumentEntry
from archive.services.audit import AuditTrail


@dataclass
class DestructionRun:
    destroyed: list[DestructionRecord] = field(default_factory=list)
    held: list[str] = field(default_factory=list)
    locked: list[str] = field(default_factory=list)
    awaiting_approval: list[str] = field(default_factory=list)  # due, but their rule wants an approval
    registry_removed: list[str] = field(default_factory=list)  # studies whose entries left the registry

    def summary(self) -> dict[str, object]:
        return {
            "destroyed": [r.study_uid for r in self.destroyed],
            "held": self.held,
            "locked": self.locked,
            "awaiting_approval": self.awaiting_approval,
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
        """Destroy up to ``limit`` due, unheld studies; the rest wait for the next run. A study
        whose rule requires approval waits for an operator's recorded approval (``approve``), and its
        record names that approver instead of the invocation's ``approved_by``."""
        outcome = DestructionRun()
        now = self._clock()
        rules_by_org: dict[str | None, list[RetentionRule]] = {}
        for study_uid, end in self._retention.studies_due(now):
            if len(outcome.destroyed) >= limit:
                break
            study = self._retention.study_retention(study_uid)
            if study is None:
                continue
            if study.legal_holds > 0:
                outcome.held.append(study_uid)
                continue
            if study.org_oid not in rules_by_org:
                rules_by_org[study.org_oid] = self._retention.rules_of(study.org_oid) if study.org_oid else []
            rules = rules_for_study(rules_by_org[study.org_oid], study.modalities)
            approver = approved_by
            if any(r.approval_required for r in rules):
                approval = self._destruction.approval_of(study_uid)
                if approval is None:
                    outcome.awaiting_approval.append(study_uid)
                    continue
                approver = approval.approved_by
            try:
                outcome.destroyed.append(
                    self._destroy(
                        study_uid,
                        end,
                        study.org_oid,
                        study.patient_key,
                        approver,
                        rejection_note=study.early_destruction_note,
                        rules=tuple(r.describe() for r in rules),
                    )
                )
            except RetentionLocked:
                outcome.locked.append(study_uid)
        # Never in the run that deprecated them: consumers see them Deprecated first, whatever the delay.
        outcome.registry_removed = self._remove_registry_entries(
            skip={r.study_uid for r in outcome.destroyed}
        )
        return outcome

    def approve(self, study_uid: str, *, by: str, reason: str) -> DestructionApproval:
        """Record an operator's approval to destroy the study once it is due (append-only, kept with
        its destruction records); only a study the index holds can be approved."""
        study = self._retention.study_retention(study_uid)
        if study is None:
            raise ArchiveError(f"no study {study_uid} in the index")
        if not by.strip() or not reason.strip():
            raise ArchiveError("an approval needs who approves and why")
        approval = DestructionApproval(study_uid, by.strip(), reason.strip(), self._clock())
        self._destruction.approve(approval, study.retention_end or approval.at)
        return approval

    def _study_documents(self, study_uid: str) -> tuple[list[DocumentEntry], str | None]:
        """Every registry entry naming the study, under any patient ID it was registered with (the
        registry's study index; after an HL7 merge the early versions keep the prior ID), and the
        registration's current entryUUID."""
        if self._registry is None:
            return [], None
        patient_id, current = self._registry.removals.study_entries(study_uid)
        return self._registry.registry.study_documents(study_uid, patient_id), current

    def _deprecate_registry_entries(
        self, study_uid: str, documents: list[DocumentEntry], current: str | None, destroyed_at: datetime
    ) -> dict[str, object]:
        """Deprecate every registry entry of the study; the record's registry fields."""
        if self._registry is None or not (documents or current):
            return {}
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

    def _archive_objects(self, study_uid: str, documents: list[DocumentEntry]) -> list[DestroyedObject]:
        """The other objects the archive wrote for the study: its manifests (every version the
        registry names, stored in the archive's repository) and the rejection notes that hid its
        instances. SHA-256 as S3 verified it at store (one HEAD each)."""
        found = []
        for key in study_archive_keys(study_uid, documents):
            versions = tuple(self._objects.versions_of(key))
            if not versions:
                continue  # an entry of another repository, or destroyed by an earlier attempt
            head = self._objects.head(key)
            found.append(
                DestroyedObject(key, head.sha256 if head else "", head.size if head else 0, versions)
            )
        return found

    def _destroy(
        self,
        study_uid: str,
        end: datetime,
        org_oid: str | None,
        patient_key: str | None,
        approved_by: str | None,
        *,
        rejection_note: str | None = None,
        rules: tuple[str, ...] = (),
    ) -> DestructionRecord:
        instances = self._destruction.instances_of(study_uid)
        documents, current = self._study_documents(study_uid)
        objects = tuple(
            DestroyedObject(i.s3_key, i.sha256, i.size, tuple(self._objects.versions_of(i.s3_key)))
            for i in instances
        ) + tuple(self._archive_objects(study_uid, documents))
        classes: dict[str, int] = {}
        for i in instances:
            classes[i.sop_class_uid] = classes.get(i.sop_class_uid, 0) + 1
        # Every version is checked before any is deleted: a study S3 would refuse stays whole.
        now = self._clock()
        refused = [
            (o.key, v) for o in objects for v in o.versions if not self._objects.deletable(o.key, v, now)
        ]
        if refused:
            self._audit_delete(
                study_uid,
                classes,
                patient_key,
                approved_by,
                audit.Outcome.MINOR_FAILURE,
                f"destruction refused by S3 Object Lock: {len(refused)} object versions are still "
                f"locked or under legal hold (first: {refused[0][0]}); the study is kept and tried again",
            )
            raise RetentionLocked(f"{len(refused)} object versions of {study_uid} are locked")
        record = DestructionRecord(
            study_uid=study_uid,
            org_oid=org_oid,
            patient_key=patient_key,
            retention_end=end,
            destroyed_at=now,
            instance_count=len(instances),
            total_bytes=sum(o.size for o in objects),
            objects=objects,
            approved_by=approved_by,
            rules=rules,
            rejection_note=rejection_note,
        )
        self._destruction.record(record, "PLANNED")
        try:
            for obj in objects:
                for version in obj.versions:
                    self._objects.delete_version(obj.key, version)
        except RetentionLocked as exc:  # a hold placed since the check: the rest stays, tried again
            self._audit_delete(
                study_uid,
                classes,
                patient_key,
                approved_by,
                audit.Outcome.MINOR_FAILURE,
                f"destruction refused by S3 Object Lock part-way ({exc}); the study is kept and tried again",
            )
            raise
        self._destruction.remove_index_entries(study_uid, instances)
        record = replace(
            record,
            **self._deprecate_registry_entries(study_uid, documents, current, record.destroyed_at),  # type: ignore[arg-type]
        )
        self._destruction.record(record, "COMPLETED")
        self._audit_delete(
            study_uid,
            classes,
            patient_key,
            approved_by,
            audit.Outcome.SUCCESS,
            f"destroyed at the end of retention ({end.date().isoformat()}): "
            f"{len(instances)} instances, {len(objects) - len(instances)} other objects, "
            f"{record.total_bytes} bytes",
        )
        return record

    def _audit_delete(
        self,
        study_uid: str,
        classes: dict[str, int],
        patient_key: str | None,
        approved_by: str | None,
        outcome: audit.Outcome,
        description: str,
    ) -> None:
        """110103 DICOM Instances Accessed, action D (life cycle 15, permanent erasure)."""
        if self._audit is None:
            return
        self._audit.record(
            audit.instances_accessed(
                source=self._audit.source,
                action=audit.Action.DELETE,
                outcome=outcome,
                user=audit.ActiveParticipant(approved_by or self._audit.source.source_id, True),
                patient_key=patient_key or "-",
                studies=[audit.study(study_uid, classes, lifecycle="15")],
                outcome_description=description,
            )
        )
