"""Storage Commitment Push Model (PS3.4 Annex J) on the wire: N-ACTION in, N-EVENT-REPORT out."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

from archive.errors import CommitmentRequestTooLarge, InvalidCommitmentRequest
from archive.model.commitment import MAX_REFERENCES, CommitmentRequest, CommitmentResult, Reference

STORAGE_COMMITMENT_SOP_CLASS = "1.2.840.10008.1.20.1"
STORAGE_COMMITMENT_SOP_INSTANCE = "1.2.840.10008.1.20.1.1"
EVENT_ALL_COMMITTED = 1
EVENT_FAILURES_EXIST = 2

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def _uid(value: Any, what: str) -> str:
    text = str(value or "").strip().rstrip("\0").strip()
    if not text:
        raise InvalidCommitmentRequest(f"{what} missing")
    if len(text) > 64 or not _UID.match(text):
        raise InvalidCommitmentRequest(f"{what} is not a UID: {text[:70]!r}")
    return text


def request_from_action_information(ds: Dataset) -> CommitmentRequest:
    """Read an N-ACTION (type 1) Action Information dataset.

    InvalidCommitmentRequest if it is malformed, CommitmentRequestTooLarge beyond MAX_REFERENCES.
    """
    transaction_uid = _uid(ds.get("TransactionUID", ""), "Transaction UID (0008,1195)")
    items = ds.get("ReferencedSOPSequence")
    if not items:
        raise InvalidCommitmentRequest("Referenced SOP Sequence (0008,1199) missing or empty")
    if len(items) > MAX_REFERENCES:
        raise CommitmentRequestTooLarge(
            f"{len(items)} references; at most {MAX_REFERENCES} in one transaction"
        )
    refs = []
    for item in items:
        if "ReferencedSOPClassUID" not in item or "ReferencedSOPInstanceUID" not in item:
            raise InvalidCommitmentRequest(
                "a Referenced SOP Sequence item lacks its SOP Class or Instance UID"
            )
        refs.append(
            Reference(
                _uid(item.ReferencedSOPClassUID, "Referenced SOP Class UID"),
                _uid(item.ReferencedSOPInstanceUID, "Referenced SOP Instance UID"),
            )
        )
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
