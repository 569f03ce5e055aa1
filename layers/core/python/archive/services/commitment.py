"""Storage Commitment Push Model (PS3.4 Annex J): deciding what the archive can commit to.

An instance is committed only when it is in the index, was stored by the requester's own
organisation, and its object is in S3 with the SHA-256 the index recorded. Until the configured
wait has passed, an instance that is not indexed yet is "not settled" (the S3 event may still be on
its way); after that it fails with 0x0112. An instance another organisation stored is treated
exactly like one that is not there (same reason, same timing), so commitment cannot be used to
learn what other organisations store.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from archive.data.index import IndexRepository
from archive.data.objects import ObjectStore, instance_key
from archive.errors import StorageFailure
from archive.model.commitment import COMMITTED, CommitmentResult, Reference
from archive.model.records import InstanceRecord

FAILURE_PROCESSING = 0x0110
FAILURE_NO_SUCH_INSTANCE = 0x0112
FAILURE_CLASS_INSTANCE_CONFLICT = 0x0119

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
    staging: ObjectStore | None = None,
    staged_deadline_passed: bool = True,
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
    to_check: list[tuple[Reference, InstanceRecord]] = []
    for ref in awaited:
        instance = instances.get(ref.sop_instance_uid)
        if instance is None:
            continue
        if instance.org_oid != org_oid:
            settled[ref] = _FOREIGN
        elif instance.rejected:  # IOCM: a rejected instance is not the archive's to commit to
            settled[ref] = FAILURE_NO_SUCH_INSTANCE
        elif instance.sop_class_uid != ref.sop_class_uid:
            settled[ref] = FAILURE_CLASS_INSTANCE_CONFLICT
        else:
            to_check.append((ref, instance))
    outcomes = _check_objects([instance for _, instance in to_check], objects)
    for (ref, _), outcome in zip(to_check, outcomes, strict=True):
        settled[ref] = outcome
    # Received (staged) but not locked yet at the deadline: its copy is in flight, so it stays
    # unsettled for a bounded grace instead of failing (docs/storage.md, "Two tiers").
    in_flight: set[Reference] = set()
    if deadline_passed and not staged_deadline_passed and staging is not None:
        absent = list(dict.fromkeys(r for r in references if settled.get(r, _ABSENT) == _ABSENT))
        in_flight = _staged(absent, staging)
    result = CommitmentResult()
    for ref in references:
        outcome = settled.get(ref, _ABSENT)
        if outcome in _AT_DEADLINE:
            if deadline_passed and ref not in in_flight:
                result.failed.append((ref, _AT_DEADLINE[outcome]))
            else:
                result.unsettled.append(ref)
        elif outcome == COMMITTED:
            result.committed.append(ref)
        else:
            result.failed.append((ref, outcome))
    return result


# Up to this many absent references are looked up one HEAD each; more (a 10,000-reference request
# naming instances never sent) list the staging bucket once instead: it holds only the copies in
# flight, so the listing is bounded by the copier's backlog, not by the request or the archive.
STAGING_HEADS_AT_MOST = 20
STAGING_LIST_LIMIT = 200_000


def _staged(absent: list[Reference], staging: ObjectStore) -> set[Reference]:
    """The references among ``absent`` received into the staging tier (copy in flight); on a
    failure to ask, all of them (they stay unsettled rather than fail)."""
    if len(absent) > STAGING_HEADS_AT_MOST:
        try:
            uids = staging.instance_uids(STAGING_LIST_LIMIT)
        except StorageFailure:
            return set(absent)
        if uids is not None:
            return {ref for ref in absent if ref.sop_instance_uid in uids}
    in_flight: set[Reference] = set()
    for ref in absent:
        try:
            if staging.head(instance_key(ref.sop_instance_uid)) is not None:
                in_flight.add(ref)
        except StorageFailure:
            in_flight.add(ref)
    return in_flight


def _check_objects(instances: list[InstanceRecord], objects: ObjectStore) -> list[int]:
    """Per instance: COMMITTED, 0x0110 (object missing or checksum differs) or _S3_ERROR."""

    def check(instance: InstanceRecord) -> int:
        try:
            stored = objects.head(instance.s3_key, instance.s3_version_id)
        except StorageFailure:
            return _S3_ERROR
        return COMMITTED if stored is not None and stored.sha256 == instance.sha256 else FAILURE_PROCESSING

    if len(instances) <= 1:
        return [check(i) for i in instances]
    with ThreadPoolExecutor(max_workers=HEAD_WORKERS, thread_name_prefix="commitment-head") as pool:
        return list(pool.map(check, instances))
