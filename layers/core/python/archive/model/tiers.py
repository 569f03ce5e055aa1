"""Storage tiers as the archive sees them: which S3 storage classes need a restore before a read,
the S3 events that change an object's tier, and a study restore's ticket (when to retry).

docs/storage.md ("Tiers and restores") describes the whole path.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

NEARLINE = "NEARLINE"
ONLINE = "ONLINE"
# Classes whose objects S3 serves only after a RestoreObject (InvalidObjectState otherwise).
# Glacier Instant Retrieval is not one of them: it is read like Standard.
RESTORE_CLASSES = frozenset({"GLACIER", "DEEP_ARCHIVE"})
RESTORE_TIERS = ("Bulk", "Standard")

# When a restore is ready at the latest, per class and retrieval tier (AWS's published
# restore times: Deep Archive Standard within 12 h, Bulk within 48 h; Flexible Retrieval
# Standard 3-5 h, Bulk 5-12 h). The retry time told to a requester is this from the request.
RESTORE_HOURS = {
    ("DEEP_ARCHIVE", "Standard"): 12,
    ("DEEP_ARCHIVE", "Bulk"): 48,
    ("GLACIER", "Standard"): 5,
    ("GLACIER", "Bulk"): 12,
}


def needs_restore(storage_class: str | None) -> bool:
    return (storage_class or "STANDARD") in RESTORE_CLASSES


def restore_hours(storage_class: str | None, tier: str) -> int:
    return RESTORE_HOURS.get((storage_class or "DEEP_ARCHIVE", tier), RESTORE_HOURS[("DEEP_ARCHIVE", tier)])


class StorageEventKind(StrEnum):
    """The S3 events (EventBridge detail-types) the index follows."""

    CLASS_CHANGED = "Object Storage Class Changed"
    RESTORE_COMPLETED = "Object Restore Completed"
    RESTORE_EXPIRED = "Object Restore Expired"


@dataclass(frozen=True)
class StorageEvent:
    """One S3 event about one object version, as EventBridge delivers it (``detail-type``,
    ``detail.bucket.name``, ``detail.object.key`` / ``version-id``, and per kind
    ``destination-storage-class`` or ``restore-expiry-time``)."""

    kind: StorageEventKind
    bucket: str
    key: str
    version_id: str | None
    storage_class: str | None = None  # CLASS_CHANGED: the class the object moved to
    restore_expiry: datetime | None = None  # RESTORE_COMPLETED: when the restored copy goes

    @classmethod
    def from_eventbridge(cls, event: dict[str, Any]) -> StorageEvent:
        kind = StorageEventKind(event["detail-type"])
        detail = event["detail"]
        expiry = detail.get("restore-expiry-time")
        return cls(
            kind=kind,
            bucket=detail["bucket"]["name"],
            key=detail["object"]["key"],
            version_id=detail["object"].get("version-id"),
            storage_class=detail.get("destination-storage-class"),
            restore_expiry=datetime.fromisoformat(expiry.replace("Z", "+00:00")) if expiry else None,
        )

    def to_eventbridge(self, *, at: datetime | None = None) -> dict[str, Any]:
        """The event as EventBridge would deliver it (the local lifecycle simulation sends these)."""
        detail: dict[str, Any] = {
            "version": "0",
            "bucket": {"name": self.bucket},
            "object": {"key": self.key, **({"version-id": self.version_id} if self.version_id else {})},
            "requester": "s3.amazonaws.com",
        }
        if self.storage_class:
            detail["destination-storage-class"] = self.storage_class
        if self.restore_expiry:
            detail["restore-expiry-time"] = _zulu(self.restore_expiry)
        return {
            "version": "0",
            "detail-type": self.kind.value,
            "source": "aws.s3",
            "time": _zulu(at or datetime.now(UTC)),
            "resources": [f"arn:aws:s3:::{self.bucket}"],
            "detail": detail,
        }


@dataclass(frozen=True)
class RestoreTicket:
    """A study's restore as a requester is told about it."""

    study_uid: str
    state: str  # REQUESTED | RESTORING
    tier: str
    requested_at: datetime
    ready_by: datetime
    nearline_instances: int
    newly_requested: bool = False

    def retry_comment(self) -> str:
        """Fits an Error Comment (LO, 64 characters): what happens and when to retry."""
        return f"NEARLINE: restoring, retry after {self.ready_by:%Y-%m-%dT%H:%MZ}"


def ready_by(requested_at: datetime, storage_class: str | None, tier: str) -> datetime:
    return requested_at + timedelta(hours=restore_hours(storage_class, tier))


def _zulu(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
