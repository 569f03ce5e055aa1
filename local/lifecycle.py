"""The local stand-in for S3 lifecycle transitions and restore completions (docs/storage.md).

On AWS a lifecycle rule moves objects to colder classes and S3 emits "Object Storage Class
Changed"; a RestoreObject completes hours later and S3 emits "Object Restore Completed";
EventBridge puts both on the storage-events queue. moto has no lifecycle engine and no EventBridge
events, so locally:

    python -m local.lifecycle transition <Study Instance UID> [--to DEEP_ARCHIVE]
    python -m local.lifecycle complete-restores <Study Instance UID>

``transition`` changes the class of each of the study's object versions in place (the local moto
server's ``/moto-api/archive/storage-class`` endpoint: same version, bytes and lock) and sends the
event the AWS rule would, per object. ``complete-restores`` asks S3 (HeadObject) which of the
study's objects have a restored copy (moto completes a RestoreObject at once) and sends "Object
Restore Completed" for each. Both run with the local cloud's environment (``make run`` prints it).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import urllib.request
from collections.abc import Collection
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from archive.config import Settings
from archive.data.models import Instance, bind_models
from archive.data.objects import ObjectStore
from archive.data.tiers import StorageEventQueue
from archive.model.tiers import StorageEvent, StorageEventKind

from .moto_server import STORAGE_CLASS_PATH

_EXPIRY = re.compile(r'expiry-date="([^"]+)"')


def _instances(study_uid: str) -> list[Instance]:
    return list(Instance.by_study.query(study_uid))


def transition_study(
    settings: Settings,
    study_uid: str,
    storage_class: str = "DEEP_ARCHIVE",
    sop_instance_uids: Collection[str] | None = None,
) -> int:
    """Move every object of the study (or only ``sop_instance_uids``: a lifecycle rule moves
    objects by age, so a study can be partly cold) to ``storage_class``; emit the events."""
    if not settings.endpoint_url:
        raise RuntimeError("the lifecycle simulation runs against the local cloud only")
    events = StorageEventQueue(settings)
    moved = 0
    for item in _instances(study_uid):
        if sop_instance_uids is not None and item.sop_instance_uid not in sop_instance_uids:
            continue
        body = json.dumps(
            {
                "bucket": settings.bucket,
                "key": item.s3_key,
                "version_id": item.s3_version_id,
                "storage_class": storage_class,
            }
        ).encode()
        request = urllib.request.Request(  # noqa: S310 - the local moto server's own endpoint
            settings.endpoint_url.rstrip("/") + STORAGE_CLASS_PATH,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            version_id = json.loads(response.read())["version_id"]
        events.send(
            StorageEvent(
                StorageEventKind.CLASS_CHANGED,
                settings.bucket,
                item.s3_key,
                version_id if version_id not in (None, "null") else None,
                storage_class=storage_class,
            ).to_eventbridge()
        )
        moved += 1
    return moved


def complete_restores(settings: Settings, study_uid: str) -> int:
    """Emit "Object Restore Completed" for each object of the study with a readable restored copy."""
    objects = ObjectStore(settings)
    events = StorageEventQueue(settings)
    completed = 0
    for item in _instances(study_uid):
        _, restore = objects.storage_state(item.s3_key, item.s3_version_id)
        if not restore or 'ongoing-request="false"' not in restore:
            continue
        match = _EXPIRY.search(restore)
        expiry = parsedate_to_datetime(match.group(1)).astimezone(UTC) if match else datetime.now(UTC)
        events.send(
            StorageEvent(
                StorageEventKind.RESTORE_COMPLETED,
                settings.bucket,
                item.s3_key,
                item.s3_version_id,
                restore_expiry=expiry,
            ).to_eventbridge()
        )
        completed += 1
    return completed


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.lifecycle", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    transition = commands.add_parser("transition", help="move a study's objects to a colder class")
    transition.add_argument("study_uid")
    transition.add_argument("--to", default="DEEP_ARCHIVE", choices=("DEEP_ARCHIVE", "GLACIER", "GLACIER_IR"))
    restored = commands.add_parser("complete-restores", help="emit Object Restore Completed events")
    restored.add_argument("study_uid")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    bind_models(settings)
    if args.command == "transition":
        print(f"{transition_study(settings, args.study_uid, args.to)} objects moved to {args.to}")
    else:
        print(f"{complete_restores(settings, args.study_uid)} restores completed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
