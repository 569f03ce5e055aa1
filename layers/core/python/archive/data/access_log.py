"""The access record: who read which patient's data, when (UTC). The start of the disclosure log.

Append-only by construction: this module only ever *creates* items, each with a condition that the
key is new, and offers no update or delete. In AWS the listener's role is granted PutItem (and
Query for the log's readers) on this table, never UpdateItem/DeleteItem; see docs/disclosure-log.md.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache

from pynamodb.exceptions import PutError

from archive.data.models import AccessRecord

LOG = logging.getLogger("archive.access")

NO_PATIENT = "-"  # the key of the record of an operation that matched nothing
# DynamoDB items are at most 400 KB; a part lists at most this many SOP Instance UIDs.
UIDS_PER_RECORD = 2000
# Items of one access record written at once.
PARALLEL_WRITES = 8


@dataclass
class Disclosed:
    """What an operation returned of one patient's study (or of the patient, at PATIENT level)."""

    patient_key: str
    controller_oid: str | None
    study_uid: str | None = None
    sop_instance_uids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class AccessEvent:
    operation: str  # C-FIND | C-MOVE | C-GET
    calling_ae: str
    org_oid: str
    level: str | None
    query: dict[str, str]
    outcome: str
    destination_ae: str | None = None
    at: datetime = field(default_factory=lambda: datetime.now(UTC))
    event_id: str = field(default_factory=lambda: uuid.uuid4().hex)


class AccessLog:
    """Writes access records; one item per patient-study part of an event."""

    def record(self, event: AccessEvent, disclosed: Iterable[Disclosed]) -> int:
        """Append the event's records; returns how many items were written.

        The items (one per patient-study part) are written concurrently, so a request that
        disclosed several studies waits for about one PutItem, not one per study; this returns
        only when every one is written, and raises the first failure after all were tried."""
        parts = list(_merge(disclosed)) or [Disclosed(NO_PATIENT, None)]
        stamp = event.at.astimezone(UTC).isoformat(timespec="milliseconds")
        items = [
            self._item(event, stamp, index, part, uids) for index, (part, uids) in enumerate(_chunks(parts))
        ]
        if len(items) == 1:
            self._write(event, 0, items[0])
            return 1
        futures = [_writers().submit(self._write, event, index, item) for index, item in enumerate(items)]
        wait(futures)
        for future in futures:
            future.result()  # the first failure, in part order
        return len(items)

    @staticmethod
    def _write(event: AccessEvent, index: int, item: AccessRecord) -> None:
        try:
            item.save(condition=AccessRecord.patient_key.does_not_exist())
        except PutError:
            LOG.exception("access record %s part %d not written", event.event_id, index)
            raise

    @staticmethod
    def _item(event: AccessEvent, stamp: str, index: int, part: Disclosed, uids: list[str]) -> AccessRecord:
        return AccessRecord(
            part.patient_key,
            f"{stamp}#{event.event_id}#{index:05d}",
            event_id=event.event_id,
            at=event.at,
            operation=event.operation,
            calling_ae=event.calling_ae,
            org_oid=event.org_oid,
            controller_oid=part.controller_oid,
            disclosure=bool(part.controller_oid and part.controller_oid != event.org_oid),
            destination_ae=event.destination_ae,
            level=event.level,
            query_keys=event.query or None,
            study_uid=part.study_uid,
            instances=uids or None,
            number_of_instances=len(uids),
            outcome=event.outcome,
        )

    def for_patient(self, patient_key: str) -> Iterator[AccessRecord]:
        """Everything recorded about one patient, oldest first."""
        return AccessRecord.query(patient_key)


@cache
def _writers() -> ThreadPoolExecutor:
    """One small pool per process for the parts of access records (threads start on first use)."""
    return ThreadPoolExecutor(max_workers=PARALLEL_WRITES, thread_name_prefix="access-log")


def _merge(disclosed: Iterable[Disclosed]) -> Iterator[Disclosed]:
    """One part per (patient, study), instances collected in order."""
    parts: dict[tuple[str, str | None], Disclosed] = {}
    for item in disclosed:
        key = (item.patient_key, item.study_uid)
        if key not in parts:
            parts[key] = Disclosed(item.patient_key, item.controller_oid, item.study_uid, [])
        parts[key].sop_instance_uids.extend(item.sop_instance_uids)
    return iter(parts.values())


def _chunks(parts: list[Disclosed]) -> Iterator[tuple[Disclosed, list[str]]]:
    for part in parts:
        uids = part.sop_instance_uids
        if not uids:
            yield part, []
            continue
        for start in range(0, len(uids), UIDS_PER_RECORD):
            yield part, uids[start : start + UIDS_PER_RECORD]
