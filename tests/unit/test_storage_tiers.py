"""Storage tier values: S3's EventBridge events as the index reads them, and the retry comment."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from archive.data.objects import instance_key, sop_instance_uid_of
from archive.model.tiers import (
    RestoreTicket,
    StorageEvent,
    StorageEventKind,
    needs_restore,
    ready_by,
)

# The shape AWS documents for S3 events in EventBridge ("Object Storage Class Changed").
CLASS_CHANGED = {
    "version": "0",
    "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
    "detail-type": "Object Storage Class Changed",
    "source": "aws.s3",
    "account": "111122223333",
    "time": "2026-11-30T00:00:00Z",
    "region": "eu-north-1",
    "resources": ["arn:aws:s3:::archive-bucket"],
    "detail": {
        "version": "0",
        "bucket": {"name": "archive-bucket"},
        "object": {"key": "instances/ab12/1.2.3.4.dcm", "size": 524288, "etag": "x", "version-id": "v1"},
        "request-id": "r",
        "requester": "s3.amazonaws.com",
        "destination-storage-class": "DEEP_ARCHIVE",
    },
}


def test_a_class_change_event_names_the_object_version_and_its_new_class() -> None:
    event = StorageEvent.from_eventbridge(json.loads(json.dumps(CLASS_CHANGED)))
    assert event.kind is StorageEventKind.CLASS_CHANGED
    assert (event.bucket, event.key, event.version_id) == (
        "archive-bucket",
        "instances/ab12/1.2.3.4.dcm",
        "v1",
    )
    assert event.storage_class == "DEEP_ARCHIVE" and needs_restore(event.storage_class)
    assert not needs_restore("GLACIER_IR") and not needs_restore(None)


def test_a_simulated_restore_completed_event_reads_back_the_same() -> None:
    expiry = datetime(2026, 12, 7, 0, 0, tzinfo=UTC)
    sent = StorageEvent(
        StorageEventKind.RESTORE_COMPLETED, "b", "instances/ab12/1.2.dcm", None, restore_expiry=expiry
    )
    assert StorageEvent.from_eventbridge(sent.to_eventbridge()) == sent


def test_instance_keys_name_their_sop_instance_and_nothing_else_does() -> None:
    assert (
        sop_instance_uid_of(instance_key("1.2.826.0.1.3680043.10.1394.7")) == "1.2.826.0.1.3680043.10.1394.7"
    )
    assert sop_instance_uid_of("manifests/ab12/1.2.3.dcm") is None
    assert sop_instance_uid_of(str(Path("instances") / "x.txt")) is None


def test_the_retry_comment_fits_an_error_comment_with_a_failure_count() -> None:
    requested = datetime(2026, 11, 30, 7, 0, tzinfo=UTC)
    ticket = RestoreTicket(
        "1.2.3", "REQUESTED", "Bulk", requested, ready_by(requested, "DEEP_ARCHIVE", "Bulk"), 3
    )
    comment = ticket.retry_comment()
    assert comment == "NEARLINE: restoring, retry after 2026-12-02T07:00Z"
    # The listener prefixes "<n> failed: " and Error Comment (LO) holds 64 characters
    assert len(f"99999 failed: {comment}") <= 64
    assert ready_by(requested, "DEEP_ARCHIVE", "Standard") == datetime(2026, 11, 30, 19, 0, tzinfo=UTC)
