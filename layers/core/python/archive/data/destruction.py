"""Data access for lawful destruction: a study's whole index entry, and the destruction records
(append-only: put, never updated or deleted)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime

from archive.data.index import instance_record
from archive.data.models import DestructionRecordItem, Instance, Series, Study
from archive.model.records import InstanceRecord
from archive.model.retention import DestroyedObject, DestructionApproval, DestructionRecord


class DestructionRepository:
    def instances_of(self, study_uid: str) -> list[InstanceRecord]:
        """Every instance row of the study, rejected ones included (GSI by_study)."""
        return [instance_record(i) for i in Instance.by_study.query(study_uid)]

    def record(self, record: DestructionRecord, stage: str) -> None:
        DestructionRecordItem(
            record.study_uid,
            f"{record.destroyed_at.isoformat()}#{stage}",
            org_oid=record.org_oid,
            patient_key=record.patient_key,
            retention_end=record.retention_end,
            at=record.destroyed_at,
            instance_count=record.instance_count,
            total_bytes=record.total_bytes,
            objects=[asdict(o) for o in record.objects],
            approved_by=record.approved_by,
            rules=set(record.rules) or None,
            rejection_note=record.rejection_note,
            registry_entries=set(record.registry_entries) or None,
            registry_removal_due=record.registry_removal_due,
        ).save(condition=DestructionRecordItem.event.does_not_exist())

    def approve(self, approval: DestructionApproval, retention_end: datetime) -> None:
        """Append an operator's approval to destroy the study (event ``<time>#APPROVED``)."""
        DestructionRecordItem(
            approval.study_uid,
            f"{approval.at.isoformat()}#APPROVED",
            retention_end=retention_end,
            at=approval.at,
            instance_count=0,
            total_bytes=0,
            objects=[],
            approved_by=approval.approved_by,
            approval_reason=approval.reason,
        ).save(condition=DestructionRecordItem.event.does_not_exist())

    def approval_of(self, study_uid: str) -> DestructionApproval | None:
        """The study's latest recorded approval, if any (its records are a handful of items)."""
        approvals = [
            DestructionApproval(study_uid, str(i.approved_by), str(i.approval_reason or ""), i.at)
            for i in DestructionRecordItem.query(study_uid, consistent_read=True)
            if i.event.endswith("#APPROVED")
        ]
        return max(approvals, key=lambda a: a.at) if approvals else None

    def registry_removed(self, record: DestructionRecord, at: datetime) -> None:
        """Append that the record's registry entries were removed (stage REGISTRY_REMOVED, at ``at``)."""
        DestructionRecordItem(
            record.study_uid,
            f"{record.destroyed_at.isoformat()}#REGISTRY_REMOVED",
            org_oid=record.org_oid,
            patient_key=record.patient_key,
            retention_end=record.retention_end,
            at=at,
            instance_count=record.instance_count,
            total_bytes=record.total_bytes,
            objects=[],
            registry_entries=set(record.registry_entries) or None,
        ).save(condition=DestructionRecordItem.event.does_not_exist())

    def records_of(self, study_uid: str) -> list[DestructionRecord]:
        items = list(DestructionRecordItem.query(study_uid, consistent_read=True))
        removed = {i.event.rsplit("#", 1)[0]: i.at for i in items if i.event.endswith("#REGISTRY_REMOVED")}
        return [
            DestructionRecord(
                study_uid=item.study_uid,
                org_oid=item.org_oid,
                patient_key=item.patient_key,
                retention_end=item.retention_end,
                destroyed_at=item.at,
                instance_count=int(item.instance_count),
                total_bytes=int(item.total_bytes),
                objects=tuple(
                    DestroyedObject(o["key"], o["sha256"], int(o["size"]), tuple(o["versions"]))
                    for o in item.objects or []
                ),
                approved_by=item.approved_by,
                rules=tuple(sorted(item.rules or ())),
                rejection_note=item.rejection_note,
                registry_entries=tuple(sorted(item.registry_entries or ())),
                registry_removal_due=item.registry_removal_due,
                registry_removed_at=removed.get(item.event.rsplit("#", 1)[0]),
            )
            for item in items
            if item.event.endswith("#COMPLETED")
        ]

    def remove_index_entries(self, study_uid: str, instances: list[InstanceRecord]) -> None:
        """Delete the study's instance, series and study rows (the patient stays)."""
        for instance in instances:
            Instance(instance.sop_instance_uid).delete()
        for series in Series.query(study_uid):
            series.delete()
        Study(study_uid).delete()
