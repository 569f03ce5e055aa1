"""IHE IOCM corrections: applying rejection notes received over C-STORE, and revoking them.

A rejection note is checked as a whole before anything changes (dcm4chee-arc's statuses, see
docs/conformance-iocm.md): only the organisation that controls a study may reject its instances,
every referenced instance must be archived with the SOP Class the note names and not be rejected
already. The note's bytes are stored (Object Lock, like every object), a record of it is written,
then each instance is hidden by a flag on its index row. The instances' bytes never change: an
operator can revoke the rejection, which shows them again.

After a rejection or a revoke the service asks for a new registration of each study concerned
(``on_study_changed``, the registration service's ``study_changed``): the new version lists what is
left, or is Deprecated when nothing is, and the IAN says UNAVAILABLE for the hidden instances.

Every rejection (applied or refused) and every revoke is an audit event: 110103 DICOM Instances
Accessed, action D for a rejection (life cycle 14, logical deletion), U for a revoke, naming the
study, its instances and who did it (the rejecting AE and its organisation, or the operator).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO

from archive.audit import messages as audit
from archive.data.index import IndexRepository
from archive.data.objects import InstanceMetadata, ObjectExists, ObjectStore, StoredObject, instance_key
from archive.data.rejections import RejectionRepository, rejection_note_key
from archive.dicom.instance import InstanceHeader
from archive.dicom.rejection import may_be_rejection_note, read_rejection_note
from archive.errors import (
    AlreadyRejected,
    ArchiveError,
    DuplicateRejectionNote,
    NoSuchInstanceToReject,
    RejectedInstanceResent,
    RejectionClassConflict,
    RejectionNotAuthorised,
    RetentionExpiryRejectionNotAllowed,
    RetentionNotExpired,
    UnknownRejection,
)
from archive.model.organisations import OrganisationInfo
from archive.model.rejection import (
    ACTIVE,
    APPLYING,
    RETENTION_EXPIRED,
    REVOKED,
    InstanceReference,
    RejectedInstance,
    RejectionNote,
    RejectionRecord,
)
from archive.model.retention import ExpiryVerdict
from archive.services.audit import AuditTrail
from archive.services.retention import RetentionService

CHUNK = 1024 * 1024


@dataclass(frozen=True)
class RevokeOutcome:
    record: RejectionRecord
    restored: int


StudyChanged = Callable[[str, str], object]  # (Study Instance UID, controlling organisation)


class CorrectionService:
    def __init__(
        self,
        rejections: RejectionRepository,
        index: IndexRepository,
        objects: ObjectStore,
        *,
        on_study_changed: StudyChanged | None = None,
        retention: RetentionService | None = None,
        audit_trail: AuditTrail | None = None,
    ) -> None:
        self._rejections = rejections
        self._index = index
        self._objects = objects
        self._on_study_changed = on_study_changed
        self._retention = retention  # decides 113039 notes; without it they are refused (A775)
        self._audit = audit_trail

    def _study_changed(self, study_uids: Iterable[str], org_oid: str) -> None:
        if self._on_study_changed is not None:
            for study_uid in dict.fromkeys(study_uids):
                self._on_study_changed(study_uid, org_oid)

    # --- on C-STORE ------------------------------------------------------------------------

    def rejection_note_in(self, fp: IO[bytes], header: InstanceHeader) -> RejectionNote | None:
        """The rejection note the received object is, or None for every other object."""
        if not may_be_rejection_note(header.sop_class_uid):
            return None
        return read_rejection_note(fp)

    def refuse_if_rejected(self, sop_instance_uid: str) -> None:
        """A rejected instance sent again is refused (A771), whatever its bytes."""
        instance = self._index.get_instance(sop_instance_uid)
        if instance is not None and instance.rejected:
            raise RejectedInstanceResent(f"subsequent occurrence of rejected instance {sop_instance_uid}")

    def reject(
        self,
        note: RejectionNote,
        fp: IO[bytes],
        *,
        size: int,
        org: OrganisationInfo,
        calling_ae: str,
        patient_key: str,
    ) -> StoredObject:
        """Check, store and apply a rejection note; returns the stored note object.

        Raises DuplicateRejectionNote (A770), NoSuchInstanceToReject (A772), RejectionClassConflict
        (A773), AlreadyRejected (A774), RetentionExpiryRejectionNotAllowed (A775), RetentionNotExpired (A776),
        RejectionNotAuthorised (0124). A note whose earlier attempt stopped half-way is finished.
        Audited either way (110103, D).
        """
        user = audit.ActiveParticipant(calling_ae, True, user_name=org.name, alternative_user_id=org.oid)
        try:
            stored = self._reject(
                note, fp, size=size, org=org, calling_ae=calling_ae, patient_key=patient_key
            )
        except ArchiveError as exc:
            self._audit_instances(
                audit.Action.DELETE,
                note.references,
                user,
                patient_key,
                audit.Outcome.MINOR_FAILURE,
                f"rejection note {note.sop_instance_uid} refused: {type(exc).__name__}: {exc}",
            )
            raise
        self._audit_instances(
            audit.Action.DELETE,
            note.references,
            user,
            patient_key,
            audit.Outcome.SUCCESS,
            f"rejected by note {note.sop_instance_uid}: {note.meaning}",
            lifecycle="14",
        )
        return stored

    def _reject(
        self,
        note: RejectionNote,
        fp: IO[bytes],
        *,
        size: int,
        org: OrganisationInfo,
        calling_ae: str,
        patient_key: str,
    ) -> StoredObject:
        existing = self._rejections.get(note.sop_instance_uid)
        if existing is not None and existing.state != APPLYING:
            raise DuplicateRejectionNote(f"rejection note {note.sop_instance_uid} received already")
        if existing is not None and existing.org_oid != org.oid:
            raise RejectionNotAuthorised("the rejection note was sent by another organisation")
        if existing is None:
            self._check(note, org)
        stored = self._store_note(
            note, fp, size=size, org=org, calling_ae=calling_ae, patient_key=patient_key
        )
        if existing is None:
            record = RejectionRecord(
                note_uid=note.sop_instance_uid,
                code=note.code,
                org_oid=org.oid,
                sending_ae=calling_ae,
                received_at=datetime.now(UTC),
                references=note.references,
                state=APPLYING,
                s3_key=stored.key,
                sha256=stored.sha256,
            )
            if not self._rejections.create(record):
                raise DuplicateRejectionNote(f"rejection note {note.sop_instance_uid} received already")
        for ref in note.references:
            instance = self._index.get_instance(ref.sop_instance_uid)
            if instance is not None:
                self._rejections.hide(instance, code=note.code, note_uid=note.sop_instance_uid)
        if note.code == RETENTION_EXPIRED and self._retention is not None:
            # The archive destroys whole studies: one with nothing visible left is due now.
            for study_uid in note.study_uids:
                self._retention.request_destruction(study_uid, note.sop_instance_uid)
        # Before ACTIVE: if asking for the registration fails, the sender's retry finishes the note.
        self._study_changed(note.study_uids, org.oid)
        self._rejections.set_state(note.sop_instance_uid, ACTIVE, expected=APPLYING)
        return stored

    def _check(self, note: RejectionNote, org: OrganisationInfo) -> None:
        # The controller is checked first, so another organisation learns nothing about the study.
        for study_uid in note.study_uids:
            study = self._index.get_study(study_uid)
            if study is None:
                raise NoSuchInstanceToReject(f"no such study {study_uid}")
            if study.org_oid != org.oid:
                raise RejectionNotAuthorised(f"study {study_uid} is controlled by another organisation")
        if note.code == RETENTION_EXPIRED:
            for study_uid in note.study_uids:
                self._check_expiry(study_uid)
        instances = self._index.get_instances([ref.sop_instance_uid for ref in note.references])
        for ref in note.references:
            instance = instances.get(ref.sop_instance_uid)
            if (
                instance is None
                or instance.study_uid != ref.study_uid
                or instance.series_uid != ref.series_uid
            ):
                raise NoSuchInstanceToReject(f"no such instance {ref.sop_instance_uid}")
            if instance.sop_class_uid != ref.sop_class_uid:
                raise RejectionClassConflict(f"instance {ref.sop_instance_uid} is of another SOP Class")
            if instance.rejected:
                raise AlreadyRejected(f"instance {ref.sop_instance_uid} is rejected already")

    def _check_expiry(self, study_uid: str) -> None:
        verdict = self._retention.expiry_verdict(study_uid) if self._retention else ExpiryVerdict.NOT_ALLOWED
        if verdict is ExpiryVerdict.NOT_ALLOWED:
            raise RetentionExpiryRejectionNotAllowed(
                f"the retention rules of study {study_uid} do not allow a 113039 rejection"
            )
        if verdict is ExpiryVerdict.NOT_EXPIRED:
            raise RetentionNotExpired(f"the retention of study {study_uid} has not ended")

    def _store_note(
        self,
        note: RejectionNote,
        fp: IO[bytes],
        *,
        size: int,
        org: OrganisationInfo,
        calling_ae: str,
        patient_key: str,
    ) -> StoredObject:
        digest = hashlib.sha256()
        fp.seek(0)
        while chunk := fp.read(CHUNK):
            digest.update(chunk)
        fp.seek(0)
        sha = digest.hexdigest()
        key = rejection_note_key(note.sop_instance_uid)
        metadata = InstanceMetadata(
            patient_key=patient_key,
            sending_ae=calling_ae,
            org_oid=org.oid,
            received_at=datetime.now(UTC),
            sop_class_uid=None,
            study_uid=note.study_uid,
        ).as_object_metadata()
        try:
            # Locked like the instances it rejects, so that it is destroyed with their study.
            first = note.references[0].sop_instance_uid if note.references else None
            lock = self._objects.lock_like(instance_key(first)) if first else None
            return self._objects.put_new(key, fp, sha256_hex=sha, size=size, metadata=metadata, lock=lock)
        except ObjectExists:
            existing = self._objects.head(key)
            if existing is not None and existing.sha256 == sha:
                return existing  # stored by an attempt that stopped before its record was written
            raise DuplicateRejectionNote(f"another note is stored as {note.sop_instance_uid}") from None

    # --- operators -------------------------------------------------------------------------

    def rejection(self, note_uid: str) -> RejectionRecord:
        record = self._rejections.get(note_uid)
        if record is None:
            raise UnknownRejection(f"no rejection note {note_uid}")
        return record

    def revoke(self, note_uid: str, *, by: str, reason: str) -> RevokeOutcome:
        """Show the instances a note rejected again (an operator's decision, recorded with who and why).

        The note's record stays, marked REVOKED; running it again after a stop finishes the job.
        """
        record = self.rejection(note_uid)
        restored = 0
        for ref in record.references:
            instance = self._index.get_instance(ref.sop_instance_uid)
            if instance is not None and self._rejections.restore(instance, note_uid=note_uid):
                restored += 1
        self._study_changed((ref.study_uid for ref in record.references), record.org_oid)
        if record.state != REVOKED:
            self._rejections.set_state(
                note_uid, REVOKED, expected=record.state, revoked=(datetime.now(UTC), by, reason)
            )
        studies = {ref.study_uid for ref in record.references}
        for study_uid in sorted(studies):
            study = self._index.get_study(study_uid)
            self._audit_instances(
                audit.Action.UPDATE,
                [r for r in record.references if r.study_uid == study_uid],
                audit.ActiveParticipant(by, True),
                (study.patient_key if study else None) or "-",
                audit.Outcome.SUCCESS,
                f"rejection note {note_uid} revoked: {reason}",
            )
        return RevokeOutcome(self.rejection(note_uid), restored)

    def _audit_instances(
        self,
        action: audit.Action,
        references: Iterable[InstanceReference],
        user: audit.ActiveParticipant,
        patient_key: str,
        outcome: audit.Outcome,
        description: str,
        lifecycle: str | None = None,
    ) -> None:
        """110103 DICOM Instances Accessed for the referenced instances, their studies named."""
        if self._audit is None:
            return
        by_study: dict[str, dict[str, list[str]]] = {}
        for ref in references:
            by_study.setdefault(ref.study_uid, {}).setdefault(ref.sop_class_uid, []).append(
                ref.sop_instance_uid
            )
        self._audit.record(
            audit.instances_accessed(
                source=self._audit.source,
                action=action,
                outcome=outcome,
                user=user,
                patient_key=patient_key,
                studies=[
                    audit.study(
                        study_uid,
                        {sop_class: len(uids) for sop_class, uids in classes.items()},
                        instances=classes,
                        lifecycle=lifecycle,
                    )
                    for study_uid, classes in by_study.items()
                ],
                outcome_description=description,
            )
        )

    # --- for registration and IAN ----------------------------------------------------------

    def rejected_in_study(self, study_uid: str) -> list[RejectedInstance]:
        """The instances of a study that rejection notes hide now (for a new registration version
        or an IAN saying UNAVAILABLE for them)."""
        return self._rejections.rejected_in_study(study_uid)
