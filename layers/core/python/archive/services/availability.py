"""Confirmation of registration: Instance Availability Notification (IAN) to the customer.

Each notification (study, registration version, destination AE) is one SQS message and one
DynamoDB record. The send_ian Lambda delivers it; a refused association, a failure status, a
timeout or a crash of the sender leaves the message on the queue, and the handler sets how long
it stays invisible (exponential backoff). After the configured number of attempts the record is
FAILED and SQS moves the message to the dead-letter queue, which raises an alarm. The operator
lists and resends notifications with the admin CLI.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from pydicom.uid import generate_uid

from archive.config import Settings
from archive.data.registration import (
    IanQueue,
    NotificationRepository,
    RegistrationConfigRepository,
    StudyContentReader,
)
from archive.data.registry import Registry
from archive.data.secrets import SecretTlsMaterial
from archive.dicom.ian import notification_dataset, send_notification
from archive.dicom.transport import ClientTls, tls_arguments
from archive.errors import NotAuthenticated, NotificationUndeliverable, UnknownApplicationEntity
from archive.model.organisations import AEInfo
from archive.model.registration import (
    AvailabilityNotice,
    AvailableInstance,
    InstanceAvailability,
    Notification,
    NotificationState,
    StudyContent,
)
from archive.tls.rotation import RotatingTls

LOG = logging.getLogger("archive.availability")
MAX_BACKOFF_SECONDS = 12 * 3600  # SQS: a message may stay invisible for 12 hours at most


def notice_of(content: StudyContent, retrieve_ae_title: str) -> AvailabilityNotice:
    """Every instance of the study as ONLINE (NEARLINE while its object needs a restore), and
    those IOCM rejection notes hide as UNAVAILABLE, with the performed procedure steps they name."""
    steps = tuple(
        dict.fromkeys(i.performed_procedure_step for i in content.instances if i.performed_procedure_step)
    )
    return AvailabilityNotice(
        study_uid=content.study_uid,
        instances=tuple(
            AvailableInstance(
                i.sop_class_uid,
                i.sop_instance_uid,
                i.series_uid,
                InstanceAvailability.NEARLINE if i.nearline else InstanceAvailability.ONLINE,
            )
            for i in content.instances
        )
        + tuple(
            AvailableInstance(
                i.sop_class_uid, i.sop_instance_uid, i.series_uid, InstanceAvailability.UNAVAILABLE
            )
            for i in content.withdrawn
        ),
        retrieve_ae_title=retrieve_ae_title,
        performed_procedure_steps=steps,  # type: ignore[arg-type]
    )


def backoff_seconds(attempt: int, base: float) -> float:
    """Delay before attempt ``attempt + 1`` after ``attempt`` failures: base x 2^(attempt-1)."""
    return min(MAX_BACKOFF_SECONDS, base * 2 ** max(0, attempt - 1))


@dataclass(frozen=True)
class DeliveryPolicy:
    retry_base_seconds: float
    max_attempts: int
    timeout_seconds: float


class AvailabilityService:
    def __init__(
        self,
        *,
        notifications: NotificationRepository,
        studies: StudyContentReader,
        config: RegistrationConfigRepository,
        directory: Registry,
        queue: IanQueue,
        policy: DeliveryPolicy,
        tls: ClientTls | None = None,
    ) -> None:
        self._notifications = notifications
        self._studies = studies
        self._config = config
        self._directory = directory
        self._queue = queue
        self.policy = policy
        self._tls = tls  # for destinations registered with the tls flag (docs/security.md)

    @classmethod
    def from_settings(cls, settings: Settings) -> AvailabilityService:
        return cls(
            notifications=NotificationRepository(),
            studies=StudyContentReader(),
            config=RegistrationConfigRepository(),
            directory=Registry(),
            queue=IanQueue(settings),
            tls=(
                RotatingTls(
                    SecretTlsMaterial(settings, settings.tls_secret_id),
                    check_seconds=settings.tls_check_seconds,
                )
                if settings.tls_secret_id
                else None
            ),
            policy=DeliveryPolicy(
                retry_base_seconds=settings.ian_retry_base_seconds,
                max_attempts=settings.ian_max_attempts,
                timeout_seconds=settings.ian_timeout_seconds,
            ),
        )

    def _tls_arguments(self, destination: AEInfo) -> dict[str, Any]:
        """TLS for a destination registered with it; its certificate must identify its organisation."""
        if not destination.tls:
            return {}
        try:
            return tls_arguments(
                destination, self._directory.get_organisation(destination.org_oid), self._tls
            )
        except NotAuthenticated as exc:
            raise NotificationUndeliverable(str(exc)) from exc

    def deliver(self, notification: Notification, *, attempt: int) -> bool:
        """Send the IAN (attempt ``attempt``, from 1). False if it was delivered before.

        Raises NotificationUndeliverable when this attempt failed.
        """
        record = self._notifications.get(notification.study_uid, notification.key)
        if record is not None and record.state is NotificationState.DELIVERED:
            return False
        try:
            destination = self._directory.get_ae(notification.destination_ae)
        except UnknownApplicationEntity as exc:
            raise NotificationUndeliverable(
                f"destination {notification.destination_ae} is not registered"
            ) from exc
        if destination.org_oid != notification.org_oid or "ian" not in destination.roles:
            # The AE moved to another organisation or lost its role: never send it this study.
            raise NotificationUndeliverable(
                f"{destination.ae_title} is no IAN destination of organisation {notification.org_oid}"
            )
        content = self._studies.content(notification.study_uid)
        if content is None:
            raise NotificationUndeliverable(f"study {notification.study_uid} is not in the index")
        archive = self._config.archive()
        dataset = notification_dataset(notice_of(content, archive.retrieve_ae_title))
        # The same notification keeps its SOP Instance UID over retries, so a receiver can tell a
        # repeat from a new notification.
        sop_instance_uid = str(
            generate_uid(
                prefix=archive.uid_root.rstrip(".") + ".",
                entropy_srcs=[
                    "ian",
                    notification.study_uid,
                    str(notification.version),
                    notification.destination_ae,
                ],
            )
        )
        send_notification(
            dataset,
            sop_instance_uid=sop_instance_uid,
            host=destination.host,
            port=destination.port,
            called_ae=destination.ae_title,
            calling_ae=archive.retrieve_ae_title,
            timeout=self.policy.timeout_seconds,
            association_arguments=self._tls_arguments(destination),
        )
        self._notifications.delivered(notification, attempt)
        LOG.info(
            "IAN for %s version %d delivered to %s (attempt %d)",
            notification.study_uid,
            notification.version,
            destination.ae_title,
            attempt,
        )
        return True

    def failed(self, notification: Notification, *, attempt: int, error: str) -> float | None:
        """Record a failed attempt; the backoff before the next one, or None when giving up."""
        give_up = attempt >= self.policy.max_attempts
        self._notifications.attempt_failed(notification, attempts=attempt, error=error, give_up=give_up)
        if give_up:
            LOG.error(
                "IAN for %s version %d to %s failed %d times; dead-lettered: %s",
                notification.study_uid,
                notification.version,
                notification.destination_ae,
                attempt,
                error,
            )
            return None
        return backoff_seconds(attempt, self.policy.retry_base_seconds)

    def retry_later(self, receipt_handle: str, seconds: float) -> None:
        self._queue.retry_later(receipt_handle, seconds)

    # --- operator ----------------------------------------------------------------------------------

    def open(self, state: NotificationState) -> list[Notification]:
        return list(self._notifications.open(state))

    def resend(self, study_uid: str, destination_ae: str | None = None) -> list[Notification]:
        """Queue the study's latest notification again, to one destination or all of them."""
        latest: dict[str, Notification] = {}
        for notification in self._notifications.of_study(study_uid):
            if destination_ae and notification.destination_ae != destination_ae:
                continue
            known = latest.get(notification.destination_ae)
            if known is None or notification.version > known.version:
                latest[notification.destination_ae] = notification
        for notification in latest.values():
            self._notifications.reopen(notification)
            self._queue.send(notification)
        return list(latest.values())
