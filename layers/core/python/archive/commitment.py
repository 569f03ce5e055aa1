"""Storage Commitment Push Model (PS3.4 Annex J): deciding what the archive can commit to.

An instance is committed only when it is in the index *and* its object is in S3 with the SHA-256
the index recorded. Until the configured wait has passed, an instance that is not indexed yet is
"not settled" (the S3 event may still be on its way); after that it fails with 0x0112.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

from archive.data.index import IndexRepository
from archive.data.objects import ObjectStore
from archive.errors import StorageFailure

STORAGE_COMMITMENT_SOP_CLASS = "1.2.840.10008.1.20.1"
STORAGE_COMMITMENT_SOP_INSTANCE = "1.2.840.10008.1.20.1.1"
EVENT_ALL_COMMITTED = 1
EVENT_FAILURES_EXIST = 2

FAILURE_PROCESSING = 0x0110
FAILURE_NO_SUCH_INSTANCE = 0x0112
FAILURE_CLASS_INSTANCE_CONFLICT = 0x0119


@dataclass(frozen=True)
class Reference:
    sop_class_uid: str
    sop_instance_uid: str

    def as_json(self) -> dict[str, str]:
        return {"sop_class_uid": self.sop_class_uid, "sop_instance_uid": self.sop_instance_uid}

    @classmethod
    def from_json(cls, value: dict[str, str]) -> Reference:
        return cls(value["sop_class_uid"], value["sop_instance_uid"])


@dataclass(frozen=True)
class CommitmentRequest:
    transaction_uid: str
    references: tuple[Reference, ...]

    @classmethod
    def from_action_information(cls, ds: Dataset) -> CommitmentRequest:
        """Read an N-ACTION (type 1) Action Information dataset; ValueError if it is malformed."""
        transaction_uid = str(ds.get("TransactionUID", "") or "").strip()
        if not transaction_uid:
            raise ValueError("Transaction UID (0008,1195) missing")
        items = ds.get("ReferencedSOPSequence")
        if not items:
            raise ValueError("Referenced SOP Sequence (0008,1199) missing or empty")
        refs = []
        for item in items:
            cls_uid = str(item.get("ReferencedSOPClassUID", "") or "").strip()
            inst_uid = str(item.get("ReferencedSOPInstanceUID", "") or "").strip()
            if not cls_uid or not inst_uid:
                raise ValueError("a Referenced SOP Sequence item lacks its SOP Class or Instance UID")
            refs.append(Reference(cls_uid, inst_uid))
        return cls(transaction_uid, tuple(refs))


@dataclass
class CommitmentResult:
    committed: list[Reference] = field(default_factory=list)
    failed: list[tuple[Reference, int]] = field(default_factory=list)
    unsettled: list[Reference] = field(default_factory=list)

    @property
    def settled(self) -> bool:
        return not self.unsettled

    def as_json(self) -> dict[str, Any]:
        return {
            "committed": [r.as_json() for r in self.committed],
            "failed": [{**r.as_json(), "reason": reason} for r, reason in self.failed],
        }

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> CommitmentResult:
        return cls(
            committed=[Reference.from_json(r) for r in value.get("committed", [])],
            failed=[(Reference.from_json(r), int(r["reason"])) for r in value.get("failed", [])],
        )


COMMITTED = 0  # in ``settled``: the instance is committed; any other value is its Failure Reason


def evaluate(
    references: Iterable[Reference],
    index: IndexRepository,
    objects: ObjectStore,
    *,
    deadline_passed: bool,
    settled: dict[Reference, int] | None = None,
) -> CommitmentResult:
    """Check each referenced instance against the index and S3.

    ``settled`` carries the outcome of instances decided in earlier passes (a stored, indexed
    object stays so: the bucket is Object-Locked), so each pass reads only the instances still
    awaited, with batched index reads, and each S3 object is checked once.
    """
    settled = {} if settled is None else settled
    references = list(references)
    awaited = [ref for ref in references if ref not in settled]
    instances = index.get_instances([ref.sop_instance_uid for ref in awaited])
    result = CommitmentResult()
    for ref in awaited:
        instance = instances.get(ref.sop_instance_uid)
        if instance is None:
            continue
        if instance.sop_class_uid != ref.sop_class_uid:
            settled[ref] = FAILURE_CLASS_INSTANCE_CONFLICT
            continue
        try:
            stored = objects.head(instance.s3_key, instance.s3_version_id)
        except StorageFailure:
            stored = None
        ok = stored is not None and stored.sha256 == instance.sha256
        settled[ref] = COMMITTED if ok else FAILURE_PROCESSING
    for ref in references:
        outcome = settled.get(ref)
        if outcome == COMMITTED:
            result.committed.append(ref)
        elif outcome is not None:
            result.failed.append((ref, outcome))
        elif deadline_passed:
            result.failed.append((ref, FAILURE_NO_SUCH_INSTANCE))
        else:
            result.unsettled.append(ref)
    return result


def event_report(transaction_uid: str, result: CommitmentResult, retrieve_ae: str) -> tuple[int, Dataset]:
    """The N-EVENT-REPORT Event Type ID and Event Information for a settled result."""
    ds = Dataset()
    ds.TransactionUID = transaction_uid
    if result.committed:
        ds.RetrieveAETitle = retrieve_ae
        ds.ReferencedSOPSequence = DicomSequence(_items(result.committed))
    if result.failed:
        failed = []
        for ref, reason in result.failed:
            item = _item(ref)
            item.FailureReason = reason
            failed.append(item)
        ds.FailedSOPSequence = DicomSequence(failed)
    return (EVENT_FAILURES_EXIST if result.failed else EVENT_ALL_COMMITTED), ds


def _item(ref: Reference) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = ref.sop_class_uid
    item.ReferencedSOPInstanceUID = ref.sop_instance_uid
    return item


def _items(refs: Sequence[Reference]) -> list[Dataset]:
    return [_item(r) for r in refs]
