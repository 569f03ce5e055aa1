"""Data access for registration and IAN: configuration, per-study registration state, the study's
content as the index holds it now, IAN notifications, and the two SQS queues.

Every function returns model values (``archive.model.registration``); nothing above this module
sees pynamodb or boto3.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
from pynamodb.exceptions import DoesNotExist, PutError, UpdateError

from archive.config import Settings
from archive.data.models import (
    IanNotification,
    Instance,
    Patient,
    Registration,
    RegistrationConfig,
    Series,
    Study,
    conditional_check_failed,
)
from archive.errors import QueueFailure, RegistrationNotConfigured, RegistryConflict
from archive.model.registration import (
    AffinityDomain,
    ArchiveIdentity,
    CodeSet,
    Notification,
    NotificationState,
    OrganisationRegistration,
    RegistrationState,
    StudyContent,
    StudyInstance,
    StudyPatient,
    StudyRegistration,
    parse_code,
)
from archive.model.tiers import NEARLINE

ARCHIVE_SCOPE = "archive"
MAX_MERGE_CHAIN = 16
SQS_MAX_DELAY = 900


# --- configuration --------------------------------------------------------------------------------


class RegistrationConfigRepository:
    """The archive's identity, affinity domains' codes and organisations' registration settings."""

    def _put(self, scope: str, data: dict[str, Any]) -> None:
        RegistrationConfig(scope, data=data, updated_at=datetime.now(UTC)).save()

    def _get(self, scope: str) -> dict[str, Any] | None:
        try:
            return dict(RegistrationConfig.get(scope, consistent_read=True).data)
        except DoesNotExist:
            return None

    def set_archive(self, identity: ArchiveIdentity) -> None:
        self._put(ARCHIVE_SCOPE, identity.as_json())

    def archive(self) -> ArchiveIdentity:
        data = self._get(ARCHIVE_SCOPE)
        if data is None:
            raise RegistrationNotConfigured(
                "the archive's registration identity is not set (admin: xds archive set)"
            )
        return ArchiveIdentity.from_json(data)

    def set_domain(self, domain: AffinityDomain) -> None:
        self._put(
            f"domain#{domain.oid}", {"oid": domain.oid, "name": domain.name, "codes": domain.codes.as_json()}
        )

    def domain(self, oid: str) -> AffinityDomain:
        data = self._get(f"domain#{oid}")
        if data is None:
            raise RegistrationNotConfigured(f"affinity domain {oid} is not configured")
        return AffinityDomain(oid, CodeSet.from_json(data.get("codes", {})), data.get("name"))

    def set_organisation(self, org: OrganisationRegistration) -> None:
        self._put(
            f"org#{org.org_oid}",
            {
                "affinity_domain": org.affinity_domain,
                "codes": org.codes.as_json(),
                "timezone": org.timezone,
                "stability_seconds": org.stability_seconds,
                "register_uncommitted": org.register_uncommitted,
                "enabled": org.enabled,
            },
        )

    def organisation(self, org_oid: str) -> OrganisationRegistration:
        data = self._get(f"org#{org_oid}")
        if data is None:
            raise RegistrationNotConfigured(f"organisation {org_oid} has no registration configuration")
        return OrganisationRegistration(
            org_oid=org_oid,
            affinity_domain=data["affinity_domain"],
            codes=CodeSet.from_json(data.get("codes", {})),
            timezone=data.get("timezone", "Europe/Helsinki"),
            stability_seconds=float(data.get("stability_seconds", 60)),
            register_uncommitted=bool(data.get("register_uncommitted", False)),
            enabled=bool(data.get("enabled", True)),
        )

    def list(self) -> list[dict[str, Any]]:
        # Admin listing of a small configuration table; never on a request path.
        return [{"scope": i.scope, **dict(i.data)} for i in RegistrationConfig.scan()]


class CachedOrganisationRegistration:
    """Read-through cache of organisations' registration settings, for the hot paths that only
    need the stability time (commitment worker, indexer)."""

    def __init__(self, repository: RegistrationConfigRepository, ttl: float = 30.0) -> None:
        self._repository = repository
        self._ttl = ttl
        self._lock = threading.Lock()
        self._items: dict[str, tuple[float, OrganisationRegistration | None]] = {}

    def get(self, org_oid: str) -> OrganisationRegistration | None:
        now = time.monotonic()
        with self._lock:
            hit = self._items.get(org_oid)
        if hit and hit[0] > now:
            return hit[1]
        try:
            value: OrganisationRegistration | None = self._repository.organisation(org_oid)
        except RegistrationNotConfigured:
            value = None
        with self._lock:
            self._items[org_oid] = (now + self._ttl, value)
        return value


# --- registration state ---------------------------------------------------------------------------


def _registration(item: Registration) -> StudyRegistration:
    return StudyRegistration(
        study_uid=item.study_uid,
        org_oid=item.org_oid,
        state=RegistrationState(item.state),
        version=int(item.version or 0),
        entry_uuid=item.entry_uuid,
        manifest_uid=item.manifest_uid,
        fingerprint=item.fingerprint,
        patient_id=item.patient_id,
        committed_at=item.committed_at,
        registered_at=item.registered_at,
    )


class RegistrationRepository:
    def get(self, study_uid: str) -> StudyRegistration | None:
        try:
            return _registration(Registration.get(study_uid, consistent_read=True))
        except DoesNotExist:
            return None

    def committed(self, study_uid: str, org_oid: str) -> None:
        """Record that a commitment of the study's instances succeeded (keeps a REGISTERED or
        WITHDRAWN state)."""
        now = datetime.now(UTC)
        Registration(study_uid).update(
            actions=[
                Registration.org_oid.set(Registration.org_oid | org_oid),
                Registration.state.set(
                    self._registered_state(study_uid) or RegistrationState.COMMITTED.value
                ),
                Registration.committed_at.set(now),
            ]
        )

    @staticmethod
    def _registered_state(study_uid: str) -> str | None:
        try:
            item = Registration.get(study_uid, consistent_read=True)
        except DoesNotExist:
            return None
        return str(item.state) if item.version else None

    def claim_schedule(self, study_uid: str, org_oid: str, now: float, until: float) -> bool:
        """True if no registration message for the study is on its way (and marks one as sent)."""
        try:
            Registration(study_uid).update(
                actions=[
                    Registration.queued_until.set(until),
                    Registration.org_oid.set(Registration.org_oid | org_oid),
                    Registration.state.set(Registration.state | RegistrationState.WAITING.value),
                ],
                condition=Registration.queued_until.does_not_exist() | (Registration.queued_until <= now),
            )
            return True
        except UpdateError as exc:
            if conditional_check_failed(exc):
                return False
            raise

    def scheduled(self, study_uid: str, until: float) -> None:
        """The register Lambda re-queued the study itself (an instance arrived meanwhile)."""
        Registration(study_uid).update(actions=[Registration.queued_until.set(until)])

    def release_schedule(self, study_uid: str) -> None:
        """The message was not sent after all: let the next request send one."""
        Registration(study_uid).update(actions=[Registration.queued_until.set(0)])

    def registered(
        self,
        study_uid: str,
        *,
        previous_version: int,
        version: int,
        entry_uuid: str,
        manifest_uid: str,
        fingerprint: str,
        patient_id: str,
        state: RegistrationState = RegistrationState.REGISTERED,
    ) -> None:
        """Record a new registered (or, when every instance is rejected, withdrawn) version;
        RegistryConflict if another run recorded one first."""
        try:
            Registration(study_uid).update(
                actions=[
                    Registration.state.set(state.value),
                    Registration.version.set(version),
                    Registration.entry_uuid.set(entry_uuid),
                    Registration.manifest_uid.set(manifest_uid),
                    Registration.fingerprint.set(fingerprint),
                    Registration.patient_id.set(patient_id),
                    Registration.registered_at.set(datetime.now(UTC)),
                ],
                condition=Registration.version.does_not_exist() | (Registration.version == previous_version),
            )
        except UpdateError as exc:
            if conditional_check_failed(exc):
                raise RegistryConflict(f"study {study_uid} was registered concurrently") from exc
            raise


# --- destroyed studies' registry entries -------------------------------------------------------------

REMOVAL_SHARD = "due"  # one partition: removals are few (destroyed studies), never hot


class RegistryRemovals:
    """The Deprecated registry entries of destroyed studies, waiting for their removal (sparse GSI
    by_removal_due: the job's cost follows the due removals, not the registry)."""

    def study_entries(self, study_uid: str) -> tuple[str | None, str | None]:
        """(registry patient ID, current entryUUID) of the study's registration, if it has one."""
        try:
            item = Registration.get(study_uid, consistent_read=True)
        except DoesNotExist:
            return None, None
        return item.patient_id, item.entry_uuid

    def destroyed(self, study_uid: str, entries: tuple[str, ...], removal_due: datetime) -> None:
        actions: list[Any] = [Registration.state.set(RegistrationState.DESTROYED.value)]
        if entries:
            actions += [
                Registration.removal_entries.set(set(entries)),
                Registration.removal_shard.set(REMOVAL_SHARD),
                Registration.removal_due.set(removal_due.astimezone(UTC).isoformat(timespec="seconds")),
            ]
        Registration(study_uid).update(actions=actions, condition=Registration.study_uid.exists())

    def due(self, now: datetime) -> Iterator[tuple[str, tuple[str, ...]]]:
        until = now.astimezone(UTC).isoformat(timespec="seconds")
        for key in Registration.by_removal_due.query(REMOVAL_SHARD, Registration.removal_due <= until):
            item = Registration.get(key.study_uid, consistent_read=True)
            yield item.study_uid, tuple(sorted(item.removal_entries or ()))

    def removed(self, study_uid: str) -> None:
        """The entries are gone: the study leaves the index (its registration item stays)."""
        Registration(study_uid).update(
            actions=[Registration.removal_shard.remove(), Registration.removal_due.remove()]
        )


# --- the study as the index holds it now -----------------------------------------------------------


def _code_of(text: str | None) -> Any:
    if not text:
        return None
    try:
        return parse_code(text)
    except ValueError:
        return None


class StudyContentReader:
    """Reads a study, its instances and its current patient from the index."""

    def study_org(self, study_uid: str) -> tuple[str | None, datetime | None] | None:
        """(controlling organisation, last arrival) of a study; None if it is not indexed."""
        try:
            study = Study.get(study_uid, consistent_read=True)
        except DoesNotExist:
            return None
        return study.org_oid, study.updated_at

    def studies_of_instances(self, sop_instance_uids: list[str]) -> dict[str, str | None]:
        """Study Instance UID -> controlling organisation, of the given instances (BatchGetItem)."""
        unique = list(dict.fromkeys(sop_instance_uids))
        study_uids = {i.study_uid for i in Instance.batch_get(unique)} if unique else set()
        out: dict[str, str | None] = {}
        for study_uid in sorted(study_uids):
            found = self.study_org(study_uid)
            out[study_uid] = found[0] if found else None
        return out

    def study_uids_of_patient(self, patient_key: str) -> list[str]:
        return [s.study_uid for s in Study.by_patient.query(patient_key)]

    def _current_patient(self, patient_key: str) -> Patient | None:
        key = patient_key
        for _ in range(MAX_MERGE_CHAIN):
            try:
                patient = Patient.get(key, consistent_read=True)
            except DoesNotExist:
                return None
            if not patient.merged_into:
                return patient
            key = patient.merged_into
        return None

    def content(self, study_uid: str) -> StudyContent | None:
        try:
            study = Study.get(study_uid, consistent_read=True)
        except DoesNotExist:
            return None
        if not study.patient_key or not study.org_oid:
            return None
        patient = self._current_patient(study.patient_key)
        pid, _, issuer = (patient.patient_key if patient else study.patient_key).partition("^^^")
        study_patient = StudyPatient(
            patient_id=pid,
            issuer=issuer,
            name=(patient.patient_name if patient else None) or study.patient_name,
            name_charset=patient.name_charset if patient else None,
            birth_date=(patient.birth_date if patient else None) or study.patient_birth_date,
            sex=(patient.sex if patient else None) or study.patient_sex,
        )
        modalities = {s.series_uid: s.modality for s in Series.query(study_uid)}
        instances: list[StudyInstance] = []
        withdrawn: list[StudyInstance] = []
        for item in Instance.by_study.query(study_uid):
            attrs = dict(item.attributes or {})
            pps = attrs.get("PerformedProcedureStep")
            pps_pair = tuple(pps.split("|", 1)) if pps and "|" in pps else None
            (withdrawn if item.rejected else instances).append(
                StudyInstance(
                    sop_class_uid=item.sop_class_uid,
                    sop_instance_uid=item.sop_instance_uid,
                    series_uid=item.series_uid,
                    modality=modalities.get(item.series_uid),
                    is_image=item.rows is not None and item.columns is not None,
                    content_date=attrs.get("ContentDate"),
                    content_time=attrs.get("ContentTime"),
                    timezone_offset=attrs.get("TimezoneOffsetFromUTC"),
                    performed_procedure_step=pps_pair,  # type: ignore[arg-type]
                    procedure_code=_code_of(attrs.get("ProcedureCode")),
                    anatomic_region=_code_of(attrs.get("AnatomicRegion")),
                    nearline=item.availability == NEARLINE,
                )
            )
        if not instances and not withdrawn:
            return None
        return StudyContent(
            study_uid=study_uid,
            org_oid=study.org_oid,
            patient=study_patient,
            instances=tuple(instances),
            study_date=study.study_date if study.study_date not in ("", "0") else None,
            study_time=study.study_time,
            accession_number=study.accession_number,
            accession_issuer=study.accession_issuer,
            study_id=study.study_id,
            study_description=study.study_description,
            referring_physician_name=study.referring_physician_name,
            specific_character_set=study.specific_character_set,
            withdrawn=tuple(withdrawn),
        )


# --- IAN notifications -----------------------------------------------------------------------------


def _notification(item: IanNotification) -> Notification:
    return Notification(
        study_uid=item.study_uid,
        version=int(item.version),
        destination_ae=item.destination_ae,
        org_oid=item.org_oid,
        state=NotificationState(item.state),
        attempts=int(item.attempts or 0),
        last_error=item.last_error,
        created_at=datetime.fromisoformat(item.created),
        delivered_at=item.delivered_at,
    )


class NotificationRepository:
    def create(self, notification: Notification) -> bool:
        """Record a PENDING notification; False if it exists already (a rerun)."""
        item = IanNotification(
            notification.study_uid,
            notification.key,
            version=notification.version,
            destination_ae=notification.destination_ae,
            org_oid=notification.org_oid,
            state=NotificationState.PENDING.value,
            open_state=NotificationState.PENDING.value,
            created=datetime.now(UTC).isoformat(),
        )
        try:
            item.save(condition=IanNotification.key.does_not_exist())
            return True
        except PutError as exc:
            if conditional_check_failed(exc):
                return False
            raise

    def get(self, study_uid: str, key: str) -> Notification | None:
        try:
            return _notification(IanNotification.get(study_uid, key, consistent_read=True))
        except DoesNotExist:
            return None

    def of_study(self, study_uid: str) -> list[Notification]:
        return [_notification(i) for i in IanNotification.query(study_uid, consistent_read=True)]

    def open(self, state: NotificationState) -> Iterator[Notification]:
        """PENDING or FAILED notifications, oldest first (a sparse index: delivered ones leave it)."""
        return (_notification(i) for i in IanNotification.open_notifications.query(state.value))

    def delivered(self, notification: Notification, attempts: int) -> None:
        IanNotification(notification.study_uid, notification.key).update(
            actions=[
                IanNotification.state.set(NotificationState.DELIVERED.value),
                IanNotification.open_state.remove(),
                IanNotification.attempts.set(attempts),
                IanNotification.delivered_at.set(datetime.now(UTC)),
            ]
        )

    def attempt_failed(self, notification: Notification, *, attempts: int, error: str, give_up: bool) -> None:
        actions: list[Any] = [
            IanNotification.attempts.set(attempts),
            IanNotification.last_error.set(error[:1000]),
        ]
        if give_up:
            actions += [
                IanNotification.state.set(NotificationState.FAILED.value),
                IanNotification.open_state.set(NotificationState.FAILED.value),
            ]
        IanNotification(notification.study_uid, notification.key).update(
            actions=actions, condition=IanNotification.state != NotificationState.DELIVERED.value
        )

    def reopen(self, notification: Notification) -> None:
        """An operator's resend: PENDING again, attempts counted afresh."""
        IanNotification(notification.study_uid, notification.key).update(
            actions=[
                IanNotification.state.set(NotificationState.PENDING.value),
                IanNotification.open_state.set(NotificationState.PENDING.value),
                IanNotification.attempts.set(0),
                IanNotification.delivered_at.remove(),
            ]
        )


# --- queues ----------------------------------------------------------------------------------------


class _Queue:
    def __init__(self, settings: Settings, queue_url: str | None, name: str) -> None:
        if not queue_url:
            raise RuntimeError(f"missing configuration: the {name} queue URL")
        self.url = queue_url
        self._settings = settings
        self._client: Any = None

    @property
    def sqs(self) -> Any:
        if self._client is None:
            self._client = boto3.client(
                "sqs", region_name=self._settings.region, endpoint_url=self._settings.endpoint_url
            )
        return self._client

    def _send(self, body: dict[str, Any], delay: float) -> None:
        try:
            self.sqs.send_message(
                QueueUrl=self.url,
                MessageBody=json.dumps(body),
                DelaySeconds=max(0, min(SQS_MAX_DELAY, int(delay + 0.999))),
            )
        except Exception as exc:  # botocore's errors are many; any of them means "not queued"
            raise QueueFailure(f"could not queue {body}: {exc}") from exc


class RegistrationQueue(_Queue):
    """Messages ``{"study_uid": ...}`` to the register_study Lambda, delayed by the stability time."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, settings.registration_queue_url, "registration")

    def request(self, study_uid: str, *, delay: float) -> None:
        self._send({"study_uid": study_uid}, delay)


class IanQueue(_Queue):
    """One message per notification (study, version, destination) to the send_ian Lambda."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, settings.ian_queue_url, "IAN")

    def send(self, notification: Notification, *, delay: float = 0) -> None:
        self._send(notification.message(), delay)

    def retry_later(self, receipt_handle: str, seconds: float) -> None:
        """Exponential backoff: the message comes back after ``seconds`` (at most 12 hours)."""
        self.sqs.change_message_visibility(
            QueueUrl=self.url,
            ReceiptHandle=receipt_handle,
            VisibilityTimeout=max(0, min(43200, int(seconds))),
        )


def queue_url_by_name(settings: Settings, name: str) -> str:
    """A queue's URL from its name (the admin CLI against the local cloud, whose names are fixed)."""
    sqs = boto3.client("sqs", region_name=settings.region, endpoint_url=settings.endpoint_url)
    return str(sqs.get_queue_url(QueueName=name)["QueueUrl"])
