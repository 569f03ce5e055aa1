"""Storing one received SOP instance: validate, bind to its patient, make it durable in S3.

The caller (the DICOM listener's C-STORE handler) maps the exceptions raised here to DICOM statuses.
A success is returned only after S3 acknowledged the object with the SHA-256 we computed: in the
Object-Locked bucket, or, with a staging tier, in the low-latency staging bucket with its copy to
the locked bucket durably queued (docs/storage.md, "Two tiers").
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO

from archive.data.index import IndexRepository
from archive.data.objects import InstanceMetadata, ObjectExists, ObjectStore, StoredObject, instance_key
from archive.data.queues import LockQueue
from archive.dicom.deflate import refuse_inflation_beyond
from archive.dicom.instance import InstanceHeader, read_header
from archive.dicom.structure import check_structure
from archive.errors import (
    DatasetDoesNotMatchSOPClass,
    InstanceConflict,
    ObjectTooLarge,
    StorageFailure,
    UntrustedPatientId,
)
from archive.model.identity import PatientIdentity, is_trusted_issuer
from archive.model.organisations import OrganisationInfo
from archive.model.retention import ObjectLock
from archive.model.staging import LockRequest
from archive.services.corrections import CorrectionService
from archive.services.retention import RetentionService

CHUNK = 1024 * 1024


@dataclass(frozen=True)
class StoreOutcome:
    header: InstanceHeader
    patient: PatientIdentity
    stored: StoredObject
    duplicate: bool
    # Irregularities of the encoding tolerated with a warning (archive.dicom.structure).
    tolerated: tuple[str, ...] = ()


def sha256_of(fp: IO[bytes]) -> str:
    digest = hashlib.sha256()
    fp.seek(0)
    while chunk := fp.read(CHUNK):
        digest.update(chunk)
    fp.seek(0)
    return digest.hexdigest()


def patient_identity(header: InstanceHeader, org: OrganisationInfo) -> PatientIdentity:
    """The Patient ID qualified by a trusted issuer, or UntrustedPatientId (A777)."""
    if not header.patient_id:
        raise UntrustedPatientId("Patient ID missing")
    issuer = header.issuer or org.default_issuer
    if not issuer:
        raise UntrustedPatientId("no Issuer of Patient ID and no default issuer for the sender")
    if not is_trusted_issuer(issuer, org):
        raise UntrustedPatientId(f"untrusted issuer {issuer} (organisation {org.oid})")
    return PatientIdentity(header.patient_id, issuer)


class _StudyClaims:
    """Remembers which study this process has already bound to which patient and organisation
    (bounded LRU): a hit for the same study with another patient or organisation is a miss, so the
    conditional write in the index decides."""

    def __init__(self, size: int = 10_000) -> None:
        self._size = size
        self._items: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self._lock = threading.Lock()

    def known(self, study_uid: str, patient_key: str, org_oid: str) -> bool:
        with self._lock:
            if self._items.get(study_uid) == (patient_key, org_oid):
                self._items.move_to_end(study_uid)
                return True
            return False

    def remember(self, study_uid: str, patient_key: str, org_oid: str) -> None:
        with self._lock:
            self._items[study_uid] = (patient_key, org_oid)
            self._items.move_to_end(study_uid)
            while len(self._items) > self._size:
                self._items.popitem(last=False)


@dataclass(frozen=True)
class StagingTier:
    """The low-latency landing tier and the queue of copies into the locked bucket."""

    objects: ObjectStore
    lock_queue: LockQueue


class StoreService:
    def __init__(
        self,
        objects: ObjectStore,
        index: IndexRepository,
        *,
        max_object_bytes: int,
        corrections: CorrectionService | None = None,
        retention: RetentionService | None = None,
        staging: StagingTier | None = None,
    ) -> None:
        self._objects = objects
        self._index = index
        self._max_object_bytes = max_object_bytes
        self._corrections = corrections
        self._retention = retention
        self._staging = staging
        self._claims = _StudyClaims()

    def store(
        self,
        path: str | os.PathLike[str],
        *,
        transfer_syntax: str,
        sop_class_uid: str,
        sop_instance_uid: str,
        calling_ae: str,
        org: OrganisationInfo,
        patients: dict[str, str] | None = None,
    ) -> StoreOutcome:
        """Validate and durably store the Part-10 file at ``path``.

        ``patients`` caches resolved patient identities for the caller (one association): a
        merge that lands in the middle of an association applies from its next association on.

        Raises InvalidDataset (C000), DatasetDoesNotMatchSOPClass (A900), UntrustedPatientId (A777),
        StudyOfAnotherOrganisation (0124), PatientIdConflict (A778), InstanceConflict (0124),
        ObjectTooLarge / StorageFailure (A700); for IOCM rejection notes and rejected instances
        the errors of ``CorrectionService``.
        """
        size = os.path.getsize(path)
        if size > self._max_object_bytes:
            raise ObjectTooLarge(f"object too large: {size} > {self._max_object_bytes} bytes")
        with open(path, "rb") as fp:
            refuse_inflation_beyond(fp, transfer_syntax, self._max_object_bytes)
            structure = check_structure(fp, size, transfer_syntax)
            fp.seek(0)
            header = read_header(fp, has_pixel_data=structure.has_pixel_data)
            self._check_sop(header, sop_class_uid, sop_instance_uid)
            patient = PatientIdentity.from_key(self._resolve(patient_identity(header, org).key, patients))
            if self._corrections is not None and (note := self._corrections.rejection_note_in(fp, header)):
                stored = self._corrections.reject(
                    note, fp, size=size, org=org, calling_ae=calling_ae, patient_key=patient.key
                )
                return StoreOutcome(header, patient, stored, duplicate=False)
            if not self._claims.known(header.study_uid, patient.key, org.oid):
                self._index.claim_study_patient(header.study_uid, patient.key, org.oid)
                self._claims.remember(header.study_uid, patient.key, org.oid)
            sha = sha256_of(fp)
            key = instance_key(header.sop_instance_uid)
            metadata = InstanceMetadata(
                sending_ae=calling_ae,
                org_oid=org.oid,
                received_at=datetime.now(UTC),
                transfer_syntax=transfer_syntax,
                sop_class_uid=header.sop_class_uid,
                study_uid=header.study_uid,
                series_uid=header.series_uid,
                patient_key=patient.key,
                # Stored as received; what was irregular stays on record with the object.
                tolerated=structure.tolerated,
            ).as_object_metadata()
            lock = self._retention.lock_for(header, org, patient.key) if self._retention is not None else None
            held = (
                self._retention.held(header.study_uid, patient.key) if self._retention is not None else False
            )
            if self._staging is not None:
                stored, duplicate = self._stage(
                    key,
                    header.sop_instance_uid,
                    fp,
                    sha=sha,
                    size=size,
                    metadata=metadata,
                    lock=lock,
                    legal_hold=held,
                )
                return StoreOutcome(header, patient, stored, duplicate, tolerated=structure.tolerated)
            try:
                stored = self._objects.put_new(
                    key, fp, sha256_hex=sha, size=size, metadata=metadata, lock=lock, legal_hold=held
                )
                return StoreOutcome(header, patient, stored, duplicate=False, tolerated=structure.tolerated)
            except ObjectExists:
                if self._corrections is not None:
                    self._corrections.refuse_if_rejected(header.sop_instance_uid)  # A771
                existing = self._objects.head(key)
                if existing is not None and existing.sha256 == sha:
                    return StoreOutcome(
                        header, patient, existing, duplicate=True, tolerated=structure.tolerated
                    )
                raise InstanceConflict(
                    "different content archived under this UID (immutable; use IOCM): "
                    f"{header.sop_instance_uid}"
                ) from None

    def _resolve(self, patient_key: str, patients: dict[str, str] | None) -> str:
        if patients is None:
            return self._index.resolve_patient(patient_key)
        if patient_key not in patients:
            patients[patient_key] = self._index.resolve_patient(patient_key)
        return patients[patient_key]

    def _stage(
        self,
        key: str,
        uid: str,
        fp: IO[bytes],
        *,
        sha: str,
        size: int,
        metadata: dict[str, str],
        lock: ObjectLock | None,
        legal_hold: bool = False,
    ) -> tuple[StoredObject, bool]:
        """Durable in the staging tier, its copy to the locked bucket queued: (stored, duplicate).

        A key is always staged or indexed (the indexer releases the staged copy only after the
        locked one is in the index), so after a staging PUT that found the key free, the index
        tells whether the UID was archived before.
        """
        assert self._staging is not None
        staging = self._staging.objects
        staged: StoredObject | None = None
        try:
            staged = staging.put_new(key, fp, sha256_hex=sha, size=size, metadata=metadata)
        except ObjectExists:
            existing = staging.head(key)
            if existing is not None:
                if existing.sha256 != sha:
                    raise InstanceConflict(
                        f"different content archived under this UID (immutable; use IOCM): {uid}"
                    ) from None
                # Re-queued: an earlier attempt may have staged it and failed to queue the copy.
                self._staging.lock_queue.request(LockRequest(key, sha, size, lock, legal_hold))
                return existing, True
            # Released meanwhile: the locked copy is indexed (checked below).
        archived = self._index.get_instance(uid)
        if archived is not None:
            if staged is not None:
                staging.delete(key)  # the archive has this UID; the new staged copy is not needed
            if self._corrections is not None:
                self._corrections.refuse_if_rejected(uid)  # A771
            if archived.sha256 != sha:
                raise InstanceConflict(
                    f"different content archived under this UID (immutable; use IOCM): {uid}"
                )
            return StoredObject(key, archived.s3_version_id, archived.sha256, archived.size, metadata), True
        if staged is None:
            raise StorageFailure(f"{key} left the staging tier but is not indexed")
        self._staging.lock_queue.request(LockRequest(key, sha, size, lock, legal_hold))
        return staged, False

    @staticmethod
    def _check_sop(header: InstanceHeader, sop_class_uid: str, sop_instance_uid: str) -> None:
        if header.sop_class_uid != sop_class_uid:
            raise DatasetDoesNotMatchSOPClass(
                f"SOP Class differs from the request: {header.sop_class_uid} vs {sop_class_uid}"
            )
        if header.sop_instance_uid != sop_instance_uid:
            raise DatasetDoesNotMatchSOPClass(
                f"SOP Instance differs from the request: {header.sop_instance_uid} vs {sop_instance_uid}"
            )
        if header.is_image and not header.has_pixel_data:
            raise DatasetDoesNotMatchSOPClass("image attributes present but no Pixel Data")
