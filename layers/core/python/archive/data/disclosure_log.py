"""Data access to the disclosure log: the hash-chained entries in DynamoDB and their anchors in
the Object-Locked audit bucket. Append-only: entries are only ever created, each conditioned on
its ``seq`` being free, so two writers racing for the same patient cannot fork the chain (the
loser re-reads the head and tries again). There is no update or delete path here, and IAM grants
the writers PutItem only (docs/security.md).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any

import boto3
from botocore.exceptions import ClientError
from pynamodb.exceptions import PutError, TransactWriteError
from pynamodb.transactions import TransactWrite

from archive.config import Settings
from archive.data.index import IndexRepository
from archive.data.models import DisclosureEntry, TransactionConnection, conditional_check_failed
from archive.data.query_index import QueryIndex
from archive.errors import ArchiveError, StorageFailure
from archive.model.disclosure import GENESIS, Anchor, ChainEntry, utc_text

LOG = logging.getLogger("archive.disclosure")
MAX_ATTEMPTS = 12
MARKER_PREFIX = "#notification#"
ANCHOR_PREFIX = "disclosure-anchors/"


class DuplicateReference(ArchiveError):
    """The notifying organisation's reference is recorded already (the entry is returned)."""

    def __init__(self, entry: ChainEntry) -> None:
        super().__init__(f"reference recorded already as entry {entry.seq} of {entry.patient_key}")
        self.entry = entry


def _entry(item: DisclosureEntry) -> ChainEntry:
    return ChainEntry(
        patient_key=item.patient_key,
        seq=int(item.seq),
        entry_id=item.entry_id,
        recorded_at=utc_text(item.recorded_at) if item.recorded_at else "",
        content=dict(item.content or {}),
        prev_hash=item.prev_hash or "",
        entry_hash=item.entry_hash or "",
    )


def _conditional(exc: Exception) -> bool:
    if conditional_check_failed(exc):
        return True
    reasons = getattr(exc, "cancellation_reasons", None) or []
    return any(r is not None and r.code == "ConditionalCheckFailed" for r in reasons)


class DisclosureRepository(TransactionConnection):
    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    # --- reading ---------------------------------------------------------------------------

    def head(self, patient_key: str) -> ChainEntry | None:
        items = DisclosureEntry.query(patient_key, scan_index_forward=False, limit=1, consistent_read=True)
        return next((_entry(i) for i in items), None)

    def entries(self, patient_key: str) -> list[ChainEntry]:
        """The whole chain, oldest first (strongly consistent)."""
        return [_entry(i) for i in DisclosureEntry.query(patient_key, consistent_read=True)]

    def get(self, patient_key: str, seq: int) -> ChainEntry | None:
        items = DisclosureEntry.query(patient_key, DisclosureEntry.seq == seq, consistent_read=True)
        return next((_entry(i) for i in items), None)

    def by_reference(self, notifier_oid: str, reference: str) -> ChainEntry | None:
        marker = next(
            iter(DisclosureEntry.query(_marker_key(notifier_oid, reference), consistent_read=True)), None
        )
        if marker is None or marker.target_key is None or marker.target_seq is None:
            return None
        return self.get(marker.target_key, int(marker.target_seq))

    def chains_written(self, start: datetime, end: datetime) -> Iterator[str]:
        """Patients whose chains got entries recorded in [start, end] (the by_day index)."""
        day = start.astimezone(UTC).date()
        last = end.astimezone(UTC).date()
        low, high = utc_text(start), utc_text(end) + "\uffff"
        seen: set[str] = set()
        while day <= last:
            for item in DisclosureEntry.by_day.query(
                day.isoformat(), DisclosureEntry.at_key.between(low, high)
            ):
                if item.patient_key not in seen:
                    seen.add(item.patient_key)
                    yield item.patient_key
            day += timedelta(days=1)

    # --- appending -------------------------------------------------------------------------

    def append(
        self,
        patient_key: str,
        *,
        entry_id: str,
        content: Mapping[str, Any],
        recorded_at: datetime,
        reference: tuple[str, str] | None = None,
    ) -> ChainEntry:
        """Add an entry at the head of the patient's chain; returns it.

        ``reference`` = (notifying organisation OID, its id of the notification): recorded at most
        once (DuplicateReference carries the entry recorded before).
        """
        if patient_key.startswith("#"):
            raise ValueError("patient keys never start with '#'")
        for _ in range(MAX_ATTEMPTS):
            head = self.head(patient_key)
            entry = ChainEntry.new(
                patient_key=patient_key,
                seq=(head.seq + 1) if head else 1,
                entry_id=entry_id,
                recorded_at=recorded_at,
                content=content,
                prev_hash=head.entry_hash if head else GENESIS,
            )
            item = DisclosureEntry(
                patient_key,
                entry.seq,
                entry_id=entry.entry_id,
                content=dict(entry.content),
                prev_hash=entry.prev_hash,
                entry_hash=entry.entry_hash,
                recorded_at=recorded_at,
                day=entry.recorded_at[:10],
                at_key=f"{entry.recorded_at}#{patient_key}#{entry.seq:012d}",
            )
            try:
                if reference is None:
                    item.save(condition=DisclosureEntry.seq.does_not_exist())
                else:
                    marker = DisclosureEntry(
                        _marker_key(*reference),
                        0,
                        entry_id=entry_id,
                        target_key=patient_key,
                        target_seq=entry.seq,
                    )
                    with TransactWrite(connection=self._connection()) as tx:
                        tx.save(marker, condition=DisclosureEntry.patient_key.does_not_exist())
                        tx.save(item, condition=DisclosureEntry.seq.does_not_exist())
            except (PutError, TransactWriteError) as exc:
                if not _conditional(exc):
                    raise StorageFailure(f"disclosure entry for {patient_key} not written: {exc}") from exc
                if reference is not None:
                    existing = self.by_reference(*reference)
                    if existing is not None:
                        raise DuplicateReference(existing) from None
                continue  # another writer took this seq: read the new head and link to it
            return entry
        raise StorageFailure(f"disclosure log of {patient_key}: too many concurrent writers")


def _marker_key(notifier_oid: str, reference: str) -> str:
    return f"{MARKER_PREFIX}{notifier_oid}#{reference}"


class AnchorStore:
    """Chain heads written to the Object-Locked audit bucket, one object per (patient, seq):
    ``disclosure-anchors/<sha256(patient)>/<seq>.json``. A head anchors its whole chain, because
    its hash covers every earlier entry through ``prev_hash``."""

    def __init__(self, settings: Settings, client: Any | None = None) -> None:
        if not settings.audit_bucket:
            raise ValueError("no audit bucket configured (AUDIT_BUCKET)")
        self._settings = settings
        self.bucket = settings.audit_bucket
        self._client = client

    @cached_property
    def client(self) -> Any:
        if self._client is not None:
            return self._client
        return boto3.client("s3", region_name=self._settings.region, endpoint_url=self._settings.endpoint_url)

    @staticmethod
    def prefix(patient_key: str) -> str:
        return f"{ANCHOR_PREFIX}{hashlib.sha256(patient_key.encode('utf-8')).hexdigest()}/"

    def put(self, anchor: Anchor) -> bool:
        """Write the anchor unless it exists (True if written now)."""
        key = f"{self.prefix(anchor.patient_key)}{anchor.seq:012d}.json"
        body = json.dumps(
            {
                "patient_key": anchor.patient_key,
                "seq": anchor.seq,
                "entry_hash": anchor.entry_hash,
                "anchored_at": anchor.anchored_at,
            },
            sort_keys=True,
        ).encode("utf-8")
        try:
            self.client.put_object(
                Bucket=self.bucket, Key=key, Body=body, ContentType="application/json", IfNoneMatch="*"
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in (
                "PreconditionFailed",
                "412",
                "ConditionalRequestConflict",
            ):
                return False
            raise StorageFailure(f"anchor {key} not written") from exc
        return True

    def latest(self, patient_key: str) -> list[Anchor]:
        """The newest anchor of the patient's chain (none or one): it covers every older one,
        because its hash covers every earlier entry."""
        paginator = self.client.get_paginator("list_objects_v2")
        keys = [
            item["Key"]
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix(patient_key))
            for item in page.get("Contents", [])
        ]
        if not keys:
            return []
        key = max(keys)  # zero-padded seq: the lexically last is the newest head
        data = json.loads(self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read())
        return [Anchor(data["patient_key"], int(data["seq"]), data["entry_hash"], data["anchored_at"], key)]


class DisclosureIndex:
    """The index as the disclosure log sees it (``archive.services.disclosure.PatientIndex``)."""

    def __init__(self, index: IndexRepository) -> None:
        self._index = index
        self._query = QueryIndex(index)

    def resolve_patient(self, patient_key: str) -> str:
        return self._index.resolve_patient(patient_key)

    def patient_exists(self, patient_key: str) -> bool:
        return self._query.patient(patient_key) is not None

    def study(self, study_uid: str) -> tuple[str | None, str | None] | None:
        study = self._index.get_study(study_uid)
        if study is None:
            return None
        return study.patient_key, study.org_oid

    def identities_of(self, survivor_key: str) -> list[str]:
        return self._query.identities_of(survivor_key)
