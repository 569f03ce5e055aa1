"""Storage Commitment Push Model (PS3.4 Annex J): deciding what the archive can commit to.

An instance is committed only when it is in the index *and* its object is in S3 with the SHA-256
the index recorded. Until the configured wait has passed, an instance that is not indexed yet is
"not settled" (the S3 event may still be on its way); after that it fails with 0x0112.
"""

from __future__ import annotations

from collections.abc import Iterable

from archive.data.index import IndexRepository
from archive.data.objects import ObjectStore
from archive.errors import StorageFailure
from archive.model.commitment import CommitmentResult, Reference

FAILURE_PROCESSING = 0x0110
FAILURE_NO_SUCH_INSTANCE = 0x0112
FAILURE_CLASS_INSTANCE_CONFLICT = 0x0119


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
