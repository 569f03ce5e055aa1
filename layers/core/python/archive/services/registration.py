"""Registration of committed studies in the XDS registry as XDS-I.b manifests (RAD-68 content).

Event-driven (docs/registration.md):

- the commitment worker calls ``RegistrationRequests.study_committed`` when a transaction is fully
  committed; the indexer calls ``study_changed`` for every newly indexed instance; the HL7
  patient_update handler calls ``patient_changed`` after a merge, identifier change or name update;
- each of them sends at most one message per study and quiet period to the registration queue,
  delayed by the organisation's stability time (a conditional write on the study's registration
  record decides who sends it);
- the register_study Lambda calls ``RegistrationService.register``: if an instance arrived within the
  stability time it re-queues the study for the rest of it; otherwise it builds the manifest of what
  the index holds now, stores it in the Object-Locked bucket, registers a DocumentEntry, a
  SubmissionSet and their associations (RPLC of the previous version, which becomes Deprecated), and
  queues one IAN per destination of the controlling organisation.

A version is made only when the content changed (instances, patient identity or demographics,
accession, description): a redelivered message, or a rerun after a crash, registers nothing twice.
"""

from __future__ import annotations

import hashlib
import io
import logging
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from pydicom.uid import generate_uid

from archive.config import Settings
from archive.data.objects import ObjectExists, ObjectStore, instance_key, manifest_key
from archive.data.registration import (
    CachedOrganisationRegistration,
    IanQueue,
    NotificationRepository,
    RegistrationConfigRepository,
    RegistrationQueue,
    RegistrationRepository,
    StudyContentReader,
)
from archive.data.registry import Registry
from archive.data.xds_registry import XdsRegistry
from archive.dicom.manifest import build_manifest, encode
from archive.dicom.times import to_utc
from archive.errors import DuplicateUniqueId, QueueFailure, RegistrationNotConfigured
from archive.model.registration import (
    ACCESSION_REFERENCE,
    FORMAT_CODE,
    MIME_TYPE,
    MODALITY_SCHEME,
    STUDY_UID_REFERENCE,
    Notification,
    NotificationState,
    RegistrationProfile,
    RegistrationState,
    StudyContent,
    StudyRegistration,
)
from archive.model.xds import (
    Association,
    AssociationType,
    Author,
    Channel,
    Code,
    DocumentEntry,
    EntryStatus,
    SubmissionSet,
)

LOG = logging.getLogger("archive.registration")
ENTRY_NAMESPACE = uuid.UUID("6c7b3c1e-0d3a-4f57-9a59-2f0a4f1d7e10")  # entryUUIDs derived from UIDs
# DICOM CID 29 (acquisition modality) display names for the eventCodeList.
MODALITY_NAMES = {
    "CR": "Computed Radiography",
    "CT": "Computed Tomography",
    "DX": "Digital Radiography",
    "MG": "Mammography",
    "MR": "Magnetic Resonance",
    "NM": "Nuclear Medicine",
    "OT": "Other",
    "PT": "Positron emission tomography",
    "RF": "Radio Fluoroscopy",
    "SC": "Secondary Capture",
    "US": "Ultrasound",
    "XA": "X-Ray Angiography",
    "IO": "Intra-oral Radiography",
    "PX": "Panoramic X-Ray",
    "ES": "Endoscopy",
    "XC": "External-camera Photography",
    "SR": "SR Document",
}


def entry_uuid(seed: str) -> str:
    return f"urn:uuid:{uuid.uuid5(ENTRY_NAMESPACE, seed)}"


# --- asking for a registration ----------------------------------------------------------------------


class RegistrationRequests:
    """Asks for a study's registration, once per quiet period, after the stability time."""

    def __init__(
        self,
        *,
        registrations: RegistrationRepository,
        queue: RegistrationQueue,
        organisations: CachedOrganisationRegistration,
        studies: StudyContentReader,
    ) -> None:
        self._registrations = registrations
        self._queue = queue
        self._organisations = organisations
        self._studies = studies

    @classmethod
    def from_settings(cls, settings: Settings) -> RegistrationRequests:
        """For the edges that trigger registration (commitment worker, indexer, patient updates)."""
        return cls(
            registrations=RegistrationRepository(),
            queue=RegistrationQueue(settings),
            organisations=CachedOrganisationRegistration(RegistrationConfigRepository()),
            studies=StudyContentReader(),
        )

    def instances_committed(self, sop_instance_uids: list[str]) -> int:
        """A storage commitment transaction was reported all committed: each study it covers is
        committed. Returns how many registration messages were queued."""
        queued = 0
        for study_uid, org_oid in self._studies.studies_of_instances(sop_instance_uids).items():
            if org_oid and self.study_committed(study_uid, org_oid):
                queued += 1
        return queued

    def study_committed(self, study_uid: str, org_oid: str) -> bool:
        """A storage commitment covering the study succeeded. True if a message was queued."""
        org = self._organisations.get(org_oid)
        if org is None or not org.enabled:
            return False
        self._registrations.committed(study_uid, org_oid)
        return self._schedule(study_uid, org_oid, org.stability_seconds)

    def study_changed(self, study_uid: str, org_oid: str | None) -> bool:
        """An instance arrived, or the patient changed: queue a (new) registration if the study is
        committed or registered already, or its organisation registers uncommitted studies too."""
        if not org_oid:
            return False
        org = self._organisations.get(org_oid)
        if org is None or not org.enabled:
            return False
        if not org.register_uncommitted and self._registrations.get(study_uid) is None:
            return False
        return self._schedule(study_uid, org_oid, org.stability_seconds)

    def patient_changed(self, patient_keys: Iterable[str]) -> int:
        """After an HL7 merge, identifier change or name update: each affected study. Returns how
        many were queued."""
        queued = 0
        for key in dict.fromkeys(patient_keys):
            for study_uid in self._studies.study_uids_of_patient(key):
                found = self._studies.study_org(study_uid)
                if found and self.study_changed(study_uid, found[0]):
                    queued += 1
        return queued

    def _schedule(self, study_uid: str, org_oid: str, delay: float) -> bool:
        now = time.time()
        if not self._registrations.claim_schedule(study_uid, org_oid, now, now + delay):
            return False  # a message is on its way; it will see this change too
        try:
            self._queue.request(study_uid, delay=delay)
        except QueueFailure:
            self._registrations.release_schedule(study_uid)
            raise
        return True


# --- registering ---------------------------------------------------------------------------------------


class Outcome(StrEnum):
    REGISTERED = "REGISTERED"  # a new version
    UNCHANGED = "UNCHANGED"  # the current version lists exactly this content
    WAITING = "WAITING"  # an instance arrived within the stability time: re-queued
    SKIPPED = "SKIPPED"  # not indexed, not committed, or the organisation does not register
    WITHDRAWN = "WITHDRAWN"  # every instance is rejected (IOCM): the entry is Deprecated


@dataclass(frozen=True)
class RegistrationOutcome:
    outcome: Outcome
    study_uid: str
    version: int = 0
    entry_uuid: str | None = None
    notifications: int = 0
    reason: str | None = None


@dataclass(frozen=True)
class StoredManifest:
    sop_instance_uid: str
    sha1: str
    size: int


class RegistrationService:
    def __init__(
        self,
        *,
        config: RegistrationConfigRepository,
        registrations: RegistrationRepository,
        studies: StudyContentReader,
        objects: ObjectStore,
        registry: XdsRegistry,
        queue: RegistrationQueue,
        notifications: NotificationRepository,
        ian_queue: IanQueue,
        directory: Registry,
    ) -> None:
        self._config = config
        self._registrations = registrations
        self._studies = studies
        self._objects = objects
        self._registry = registry
        self._queue = queue
        self._notifications = notifications
        self._ian_queue = ian_queue
        self._directory = directory

    @classmethod
    def from_settings(cls, settings: Settings) -> RegistrationService:
        return cls(
            config=RegistrationConfigRepository(),
            registrations=RegistrationRepository(),
            studies=StudyContentReader(),
            objects=ObjectStore(settings),
            registry=XdsRegistry(settings),
            queue=RegistrationQueue(settings),
            notifications=NotificationRepository(),
            ian_queue=IanQueue(settings),
            directory=Registry(),
        )

    def profile(self, org_oid: str) -> RegistrationProfile:
        org = self._config.organisation(org_oid)
        return RegistrationProfile.merge(
            self._config.archive(),
            self._config.domain(org.affinity_domain),
            org,
            self._directory.get_organisation(org_oid).name,
        )

    def register(self, study_uid: str, *, now: datetime | None = None) -> RegistrationOutcome:
        """Register the study's current content as a new version, if it is due and changed."""
        now = now or datetime.now(UTC)
        found = self._studies.study_org(study_uid)
        if found is None or not found[0]:
            return RegistrationOutcome(Outcome.SKIPPED, study_uid, reason="study not indexed")
        org_oid, last_arrival = found
        assert org_oid is not None
        try:
            profile = self.profile(org_oid)
        except RegistrationNotConfigured as exc:
            return RegistrationOutcome(Outcome.SKIPPED, study_uid, reason=str(exc))
        organisation = profile.organisation
        current = self._registrations.get(study_uid)
        if not organisation.enabled:
            return RegistrationOutcome(Outcome.SKIPPED, study_uid, reason="registration disabled")
        if (
            current is None or current.state is RegistrationState.WAITING
        ) and not organisation.register_uncommitted:
            return RegistrationOutcome(Outcome.SKIPPED, study_uid, reason="not committed")
        if last_arrival is not None:
            quiet = (now - last_arrival).total_seconds()
            if quiet < organisation.stability_seconds:
                wait = organisation.stability_seconds - quiet
                self._requeue(study_uid, org_oid, wait)
                return RegistrationOutcome(Outcome.WAITING, study_uid, reason=f"instance {quiet:.1f} s ago")
        content = self._studies.content(study_uid)
        if content is None:
            return RegistrationOutcome(Outcome.SKIPPED, study_uid, reason="no instances")
        fingerprint = content.fingerprint()
        if current is not None and current.fingerprint == fingerprint and current.entry_uuid:
            sent = self._queue_notifications(study_uid, org_oid, current.version)
            return RegistrationOutcome(
                Outcome.UNCHANGED, study_uid, current.version, current.entry_uuid, notifications=sent
            )
        previous = self._previous_entry(current)
        if not content.instances:
            return self._withdraw(content, current, previous, fingerprint)
        version = (current.version if current else 0) + 1
        manifest = self._store_manifest(content, profile, version, now)
        document = self.document_entry(
            content, profile, manifest, version=version, now=now, previous=previous
        )
        submission_set = self.submission_set(content, profile, document, now=now)
        associations = [
            Association(
                entry_uuid=entry_uuid(f"{document.unique_id}/has-member"),
                type=AssociationType.HAS_MEMBER,
                source=submission_set.entry_uuid,
                target=document.entry_uuid,
                patient_id=document.patient_id,
                submission_set_status="Original",
            )
        ]
        if previous is not None:
            associations.append(
                Association(
                    entry_uuid=entry_uuid(f"{document.unique_id}/replaces"),
                    type=AssociationType.REPLACE,
                    source=document.entry_uuid,
                    target=previous.entry_uuid,
                    patient_id=document.patient_id,
                )
            )
        try:
            self._registry.register(
                [document],
                submission_set,
                associations=associations,
                deprecate=[previous.entry_uuid] if previous is not None else [],
            )
        except DuplicateUniqueId:
            LOG.info("manifest %s of %s registered before (a rerun)", manifest.sop_instance_uid, study_uid)
        self._registrations.registered(
            study_uid,
            previous_version=current.version if current else 0,
            version=version,
            entry_uuid=document.entry_uuid,
            manifest_uid=manifest.sop_instance_uid,
            fingerprint=fingerprint,
            patient_id=document.patient_id,
        )
        sent = self._queue_notifications(study_uid, org_oid, version)
        LOG.info(
            "registered %s version %d as %s; %d IAN queued", study_uid, version, document.entry_uuid, sent
        )
        return RegistrationOutcome(
            Outcome.REGISTERED, study_uid, version, document.entry_uuid, notifications=sent
        )

    # --- pieces ------------------------------------------------------------------------------------

    def _requeue(self, study_uid: str, org_oid: str, wait: float) -> None:
        self._registrations.scheduled(study_uid, time.time() + wait)
        self._queue.request(study_uid, delay=wait)

    def _previous_entry(self, current: StudyRegistration | None) -> DocumentEntry | None:
        """The Approved entry a new version replaces; None when there is none (first version, or
        the study was withdrawn: a Deprecated entry is not replaced again)."""
        if current is None or not current.entry_uuid:
            return None
        found = self._registry.documents_by_uuid([current.entry_uuid])
        return found[0] if found and found[0].status is EntryStatus.APPROVED else None

    def _withdraw(
        self,
        content: StudyContent,
        current: StudyRegistration | None,
        previous: DocumentEntry | None,
        fingerprint: str,
    ) -> RegistrationOutcome:
        """IOCM: every instance of the study is rejected. Its Approved entry becomes Deprecated with
        nothing replacing it (XDS consumers no longer find the study), recorded as a version of its
        own so that the customer's IAN says UNAVAILABLE for every instance."""
        study_uid = content.study_uid
        if current is None or not current.entry_uuid:
            return RegistrationOutcome(Outcome.SKIPPED, study_uid, reason="every instance is rejected")
        if previous is not None:
            self._registry.deprecate([previous.entry_uuid])
        version = current.version + 1
        self._registrations.registered(
            study_uid,
            previous_version=current.version,
            version=version,
            entry_uuid=current.entry_uuid,
            manifest_uid=current.manifest_uid or "",
            fingerprint=fingerprint,
            patient_id=current.patient_id or "",
            state=RegistrationState.WITHDRAWN,
        )
        sent = self._queue_notifications(study_uid, content.org_oid, version)
        LOG.info(
            "every instance of %s is rejected: %s Deprecated; %d IAN queued",
            study_uid,
            current.entry_uuid,
            sent,
        )
        return RegistrationOutcome(
            Outcome.WITHDRAWN, study_uid, version, current.entry_uuid, notifications=sent
        )

    def _store_manifest(
        self, content: StudyContent, profile: RegistrationProfile, version: int, now: datetime
    ) -> StoredManifest:
        """Put the manifest in the Object-Locked bucket with its SHA-256; on a rerun (the UID is
        derived from the content) the manifest stored first stands and is used as it is."""
        ds = build_manifest(content, profile, version=version, created=now)
        sop_uid = str(ds.SOPInstanceUID)
        data = encode(ds)
        key = manifest_key(sop_uid)
        metadata = {
            "kind": "xds-i-manifest",
            "org-oid": content.org_oid,
            "study-uid": content.study_uid,
            "version": str(version),
            "sop-class-uid": str(ds.SOPClassUID),
            "received-at": now.isoformat(timespec="milliseconds"),
        }
        # Locked like the study's instances (docs/retention.md), so that it is destroyed with them.
        lock = self._objects.lock_like(instance_key(content.instances[0].sop_instance_uid))
        try:
            self._objects.put_new(
                key,
                io.BytesIO(data),
                sha256_hex=hashlib.sha256(data).hexdigest(),
                size=len(data),
                metadata=metadata,
                lock=lock,
            )
        except ObjectExists:
            data = self._objects.get_stream(key).read()
        return StoredManifest(sop_uid, hashlib.sha1(data).hexdigest(), len(data))  # noqa: S324 - XDS hash is SHA-1

    @staticmethod
    def document_entry(
        content: StudyContent,
        profile: RegistrationProfile,
        manifest: StoredManifest,
        *,
        version: int,
        now: datetime,
        previous: DocumentEntry | None,
    ) -> DocumentEntry:
        """The registry entry of one manifest version: every attribute consumers filter on or show."""
        codes = profile.codes
        assert codes.class_code and codes.type_code and codes.confidentiality_codes is not None
        assert codes.healthcare_facility_type and codes.practice_setting and codes.language_code
        zone = profile.zone
        start = to_utc(content.study_date, content.study_time, offset=content.timezone_offset, zone=zone)
        content_times = [
            t
            for t in (
                to_utc(
                    i.content_date,
                    i.content_time,
                    offset=i.timezone_offset or content.timezone_offset,
                    zone=zone,
                )
                for i in content.instances
            )
            if t is not None
        ]
        if start is None and content_times:
            start = min(content_times)
        stop = max([*content_times, *([start] if start else [])], default=None)
        procedure = next((i.procedure_code for i in content.instances if i.procedure_code), None)
        events = [Code(m, MODALITY_SCHEME, MODALITY_NAMES.get(m, m)) for m in content.modalities]
        for region in dict.fromkeys(i.anatomic_region for i in content.instances if i.anatomic_region):
            assert region is not None
            events.append(region)
        patient = content.patient
        org = profile.organisation
        references = [f"{content.study_uid}^^^^{STUDY_UID_REFERENCE}"]
        if content.accession_number:
            authority = f"&{content.accession_issuer}&ISO" if content.accession_issuer else ""
            references.insert(0, f"{content.accession_number}^^^{authority}^{ACCESSION_REFERENCE}")
        source_info = [f"PID-3|{patient.cx}"]
        if patient.name:
            source_info.append(f"PID-5|{patient.name}")
        if patient.birth_date:
            source_info.append(f"PID-7|{patient.birth_date}")
        if patient.sex:
            source_info.append(f"PID-8|{patient.sex}")
        new_uuid = entry_uuid(manifest.sop_instance_uid)
        return DocumentEntry(
            entry_uuid=new_uuid,
            unique_id=manifest.sop_instance_uid,
            patient_id=patient.cx,
            controller=org.org_oid,
            channel=Channel.MANIFEST,
            mime_type=MIME_TYPE,
            class_code=codes.class_code,
            type_code=procedure or codes.type_code,
            format_code=FORMAT_CODE,
            confidentiality_codes=tuple(codes.confidentiality_codes),
            healthcare_facility_type=codes.healthcare_facility_type,
            practice_setting=codes.practice_setting,
            creation_time=now.astimezone(UTC).replace(microsecond=0),
            hash=manifest.sha1,
            size=manifest.size,
            repository_unique_id=profile.archive.repository_unique_id,
            language_code=codes.language_code,
            status=EntryStatus.APPROVED,
            title=content.study_description or "Imaging study",
            event_codes=tuple(events),
            authors=(Author(institutions=(f"{profile.org_name}^^^^^^^^^{org.org_oid}",)),),
            source_patient_id=patient.cx,
            source_patient_info=tuple(source_info),
            service_start_time=start,
            service_stop_time=stop,
            reference_ids=tuple(references),
            home_community_id=profile.archive.home_community_id,
            logical_id=(previous.logical_id or previous.entry_uuid) if previous else new_uuid,
            version=version,
            study_instance_uid=content.study_uid,
        )

    @staticmethod
    def submission_set(
        content: StudyContent, profile: RegistrationProfile, document: DocumentEntry, *, now: datetime
    ) -> SubmissionSet:
        archive = profile.archive
        assert profile.codes.content_type is not None
        unique_id = generate_uid(
            prefix=archive.uid_root.rstrip(".") + ".", entropy_srcs=["submission-set", document.unique_id]
        )
        return SubmissionSet(
            entry_uuid=entry_uuid(f"{document.unique_id}/submission-set"),
            unique_id=str(unique_id),
            source_id=archive.oid,
            patient_id=document.patient_id,
            submission_time=now.astimezone(UTC).replace(microsecond=0),
            content_type=profile.codes.content_type,
            controller=document.controller,
            title=f"Imaging study {content.study_uid} version {document.version}",
            authors=document.authors,
            home_community_id=archive.home_community_id,
        )

    def _queue_notifications(self, study_uid: str, org_oid: str, version: int) -> int:
        """One IAN per AE of the controlling organisation with the ``ian`` role (never another's)."""
        sent = 0
        for ae in self._directory.list_aes(org_oid):
            if "ian" not in ae.roles or ae.org_oid != org_oid:
                continue
            notification = Notification(study_uid, version, ae.ae_title, org_oid)
            created = self._notifications.create(notification)
            if not created:
                existing = self._notifications.get(study_uid, notification.key)
                if existing is None or existing.state is not NotificationState.PENDING or existing.attempts:
                    continue  # delivered, given up, or its message is in flight
            self._ian_queue.send(notification)
            sent += 1
        return sent
