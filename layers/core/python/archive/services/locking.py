"""Copying staged instances into the Object-Locked bucket (docs/storage.md, "Two tiers").

The listener acknowledged a C-STORE once the object was durable in the staging tier; this makes
it the archive's responsibility: a conditional PUT into the locked bucket with the retention the
listener chose, S3 verifying the SHA-256 the listener computed. Idempotent: a locked copy that is
already there with the same digest and size is success, so a redelivered message changes nothing.
The locked copy's ObjectCreated event then indexes it, and the indexer releases the staged copy.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from dataclasses import dataclass
from enum import StrEnum
from typing import IO

from archive.data.objects import METADATA_SHA256, ObjectExists, ObjectStore
from archive.errors import InstanceConflict, StorageFailure
from archive.model.staging import LockRequest

LOG = logging.getLogger("archive.locking")
# Objects up to this size are copied through memory; larger ones through a temporary file.
IN_MEMORY_BYTES = 16 * 1024 * 1024
CHUNK = 1024 * 1024


class LockOutcome(StrEnum):
    COPIED = "copied"
    ALREADY_LOCKED = "already-locked"


class StagedCopyMissing(StorageFailure):
    """Neither a staged nor a locked copy exists: retried (the staged copy may be on its way)."""


@dataclass(frozen=True)
class Locker:
    staging: ObjectStore
    archive: ObjectStore

    def lock(self, request: LockRequest) -> LockOutcome:
        """Make the locked copy exist and verify it; raises StorageFailure (retried) or
        InstanceConflict (a different locked object under the key: never overwritten).

        The common case costs two requests: GET of the staged copy and a conditional PUT that
        returns only once S3 confirmed the SHA-256 it computed over what it stored (put_new). A
        taken key or a missing staged copy is settled by a HEAD of the locked copy.
        """
        with tempfile.SpooledTemporaryFile(max_size=IN_MEMORY_BYTES) as fp:
            staged = self.staging.fetch_to(request.key, fp)
            if staged is None:
                if self._verified(request):  # locked, indexed and released by an earlier delivery
                    return LockOutcome.ALREADY_LOCKED
                raise StagedCopyMissing(f"no staged copy of {request.key}")
            fp.seek(0)
            if staged.size != request.size or _sha256(fp) != request.sha256:
                raise StorageFailure(f"staged copy of {request.key} differs from what was received")
            metadata = {k: v for k, v in staged.metadata.items() if k != METADATA_SHA256}
            try:
                self.archive.put_new(
                    request.key,
                    fp,
                    sha256_hex=request.sha256,
                    size=request.size,
                    metadata=metadata,
                    lock=request.lock,
                    legal_hold=request.legal_hold,
                )
            except ObjectExists:
                if self._verified(request):
                    return LockOutcome.ALREADY_LOCKED
                raise StorageFailure(
                    f"{request.key} is taken but its locked copy is not visible yet"
                ) from None
        return LockOutcome.COPIED

    def _verified(self, request: LockRequest) -> bool:
        """True if the locked copy exists with the received digest and size."""
        locked = self.archive.head(request.key)
        if locked is None:
            return False
        if locked.sha256 != request.sha256 or locked.size != request.size:
            LOG.error("LOCKED COPY DIFFERS %s: %s, staged %s", request.key, locked.sha256, request.sha256)
            raise InstanceConflict(f"a different object is locked under {request.key}")
        return True


def _sha256(fp: IO[bytes]) -> str:
    digest = hashlib.sha256()
    while chunk := fp.read(CHUNK):
        digest.update(chunk)
    fp.seek(0)
    return digest.hexdigest()
