"""Storage Commitment Push Model (PS3.4 Annex J) on the wire: N-ACTION in, N-EVENT-REPORT out."""

from __future__ import annotations

from collections.abc import Sequence

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

from archive.model.commitment import CommitmentRequest, CommitmentResult, Reference

STORAGE_COMMITMENT_SOP_CLASS = "1.2.840.10008.1.20.1"
STORAGE_COMMITMENT_SOP_INSTANCE = "1.2.840.10008.1.20.1.1"
EVENT_ALL_COMMITTED = 1
EVENT_FAILURES_EXIST = 2


def request_from_action_information(ds: Dataset) -> CommitmentRequest:
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
    return CommitmentRequest(transaction_uid, tuple(refs))


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
