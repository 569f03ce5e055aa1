"""Storage Commitment Push Model (PS3.4 Annex J): deciding what the archive can commit to.

An instance is committed only when it is in the index, was stored by the requester's own
organisation, and its object is in S3 with the SHA-256 the index recorded. Until the configured
wait has passed, an instance that is not indexed yet is "not settled" (the S3 event may still be on
its way); after that it fails with 0x0112. An instance another organisation stored is treated
exactly like one that is not there (same reason, same timing), so commitment cannot be used to
learn what other organisations store.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

from archive.data.index import IndexRepository
from archive.data.models import Instance
from archive.data.objects import ObjectStore
from archive.errors import CommitmentRequestTooLarge, InvalidCommitmentRequest, StorageFailure

STORAGE_COMMITMENT_SOP_CLASS = "1.2.840.10008.1.20.1"
STORAGE_COMMITMENT_SOP_INSTANCE = "1.2.840.10008.1.20.1.1"
EVENT_ALL_COMMITTED = 1
EVENT_FAILURES_EXIST = 2

FAILURE_PROCESSING = 0x0110
FAILURE_NO_SUCH_INSTANCE = 0x0112
FAILURE_CLASS_INSTANCE_CONFLICT = 0x0119

# Transaction states.
PENDING = "PENDING"
REPORTED = "REPORTED"
UNDELIVERABLE = "UNDELIVERABLE"

# One transaction is recorded in one DynamoDB transaction (all or nothing, so a request is either
# wholly recorded or refused): at most 100 items and 4 MB. 1,000 references a slice are at most
# ~71 KB even with 64-character UIDs, so 40 slices stay well inside both limits.
REFERENCES_PER_PART = 1000
MAX_REFERENCES = 40_000

# CloudWatch metric (EMF) the DICOM listener emits when it gives a report up; CDK alarms on it.
UNDELIVERABLE_METRIC = "CommitmentsUndeliverable"

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def _uid(value: Any, what: str) -> str:
    text = str(value or "").strip().rstrip("\0").strip()
    if not text:
        raise InvalidCommitmentRequest(f"{what} missing")
    if len(text) > 64 or not _UID.match(text):
        raise InvalidCommitmentRequest(f"{what} is not a UID: {text[:70]!r}")
    return text


@dataclass(frozen=True)
class Reference:
    sop_class_uid: str
    sop_instance_uid: str


@dataclass(frozen=True)
class CommitmentRequest:
    transaction_uid: str
    references: tuple[Reference, ...]

    @classmethod
    def from_action_information(cls, ds: Dataset) -> CommitmentRequest:
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
        return cls(transaction_uid, tuple(refs))


COMMITTED = 0  # an outcome: the instance is committed; any other outcome is its Failure Reason


@dataclass
class CommitmentResult:
    committed: list[Reference] = field(default_factory=list)
    failed: list[tuple[Reference, int]] = field(default_factory=list)
    unsettled: list[Reference] = field(default_factory=list)

    @property
    def settled(self) -> bool:
        return not self.unsettled

    def outcomes(self, references: Sequence[Reference]) -> list[int]:
        """One outcome per reference, in request order: COMMITTED or the Failure Reason."""
        by_ref = {ref: COMMITTED for ref in self.committed}
        by_ref.update(dict(self.failed))
        return [by_ref[ref] for ref in references]

    @classmethod
    def from_outcomes(cls, references: Sequence[Reference], outcomes: Sequence[int]) -> CommitmentResult:
        if len(references) != len(outcomes):
            raise ValueError(f"{len(outcomes)} outcomes for {len(references)} references")
        result = cls()
        for ref, outcome in zip(references, outcomes, strict=True):
            if outcome == COMMITTED:
                result.committed.append(ref)
            else:
                result.failed.append((ref, int(outcome)))
        return result


@dataclass(frozen=True)
class CommitmentTransaction:
    """A storage commitment transaction as recorded: who asked, and how far it got."""

    transaction_uid: str
    requester_ae: str
    org_oid: str
    state: str
    reference_count: int
    deadline_at: float
    received_at: datetime | None = None
    # Listener task that received the N-ACTION (the only one that can answer on its association).
    origin: str | None = None
    attempts: int = 0
    result_saved: bool = False  # the outcome is frozen once settled
    committed_count: int | None = None
    failed_count: int | None = None
    last_error: str | None = None
    reported_on: str | None = None
    reported_at: datetime | None = None
    undeliverable_at: float | None = None

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("received_at", "reported_at"):
            if out[key] is not None:
                out[key] = out[key].isoformat()
        return out


# Interim markers in ``settled``: outcomes that are not final until the wait is over.
# Stored by another organisation: fails 0x0112 at the deadline, exactly like an absent instance.
_FOREIGN = -1
# S3 could not be asked (an error, not a missing object): asked again next pass, 0x0110 at the deadline.
_S3_ERROR = -2
# Not in the index (yet): 0x0112 at the deadline.
_ABSENT = -3
_AT_DEADLINE = {
    _ABSENT: FAILURE_NO_SUCH_INSTANCE,
    _FOREIGN: FAILURE_NO_SUCH_INSTANCE,
    _S3_ERROR: FAILURE_PROCESSING,
}
# Concurrent S3 HEAD requests while checking one transaction's instances.
HEAD_WORKERS = 16


def evaluate(
    references: Iterable[Reference],
    index: IndexRepository,
    objects: ObjectStore,
    *,
    org_oid: str,
    deadline_passed: bool,
    settled: dict[Reference, int] | None = None,
) -> CommitmentResult:
    """Check each referenced instance against the index and S3, for the requester's ``org_oid``.

    ``settled`` carries the outcome of instances decided in earlier passes (a stored, indexed
    object stays so: the bucket is Object-Locked), so each pass reads only the instances still
    awaited, with batched index reads (100 keys a request), and each S3 object is checked once.
    """
    settled = {} if settled is None else settled
    references = list(references)
    awaited = [ref for ref in dict.fromkeys(references) if settled.get(ref, _S3_ERROR) == _S3_ERROR]
    instances = index.get_instances([ref.sop_instance_uid for ref in awaited])
    to_check: list[tuple[Reference, Instance]] = []
    for ref in awaited:
        instance = instances.get(ref.sop_instance_uid)
        if instance is None:
            continue
        if instance.org_oid != org_oid:
            settled[ref] = _FOREIGN
        elif instance.sop_class_uid != ref.sop_class_uid:
            settled[ref] = FAILURE_CLASS_INSTANCE_CONFLICT
        else:
            to_check.append((ref, instance))
    outcomes = _check_objects([instance for _, instance in to_check], objects)
    for (ref, _), outcome in zip(to_check, outcomes, strict=True):
        settled[ref] = outcome
    result = CommitmentResult()
    for ref in references:
        outcome = settled.get(ref, _ABSENT)
        if outcome in _AT_DEADLINE:
            if deadline_passed:
                result.failed.append((ref, _AT_DEADLINE[outcome]))
            else:
                result.unsettled.append(ref)
        elif outcome == COMMITTED:
            result.committed.append(ref)
        else:
            result.failed.append((ref, outcome))
    return result


def _check_objects(instances: list[Instance], objects: ObjectStore) -> list[int]:
    """Per instance: COMMITTED, 0x0110 (object missing or checksum differs) or _S3_ERROR."""

    def check(instance: Instance) -> int:
        try:
            stored = objects.head(instance.s3_key, instance.s3_version_id)
        except StorageFailure:
            return _S3_ERROR
        return COMMITTED if stored is not None and stored.sha256 == instance.sha256 else FAILURE_PROCESSING

    if len(instances) <= 1:
        return [check(i) for i in instances]
    with ThreadPoolExecutor(max_workers=HEAD_WORKERS, thread_name_prefix="commitment-head") as pool:
        return list(pool.map(check, instances))


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
