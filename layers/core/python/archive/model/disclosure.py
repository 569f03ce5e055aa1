"""The disclosure log's values and its hash chain, without I/O.

Each patient's disclosures form a chain: entry ``n`` carries ``prev_hash`` = the ``entry_hash`` of
entry ``n-1`` (64 zeros for the first) and its own ``entry_hash`` = SHA-256 over the canonical JSON
(sorted keys, no spaces, UTF-8) of everything else in the entry. Editing an entry breaks its hash;
deleting one leaves a gap in ``seq`` or a ``prev_hash`` that points at nothing; rewriting the whole
chain consistently is caught by the anchors: chain heads written periodically to an Object-Locked
bucket, which no one can change (``verify_chain``).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

GENESIS = "0" * 64


class DisclosureKind(StrEnum):
    XDS = "XDS"  # the archive disclosed over XDS (ITI-43, RAD-69; ITI-18 when a query discloses)
    DICOM = "DICOM"  # the archive disclosed over DICOM Q/R to another organisation
    NOTIFICATION = "NOTIFICATION"  # a customer disclosed from its own system and notified the archive


def utc_text(at: datetime) -> str:
    """ISO 8601 UTC with milliseconds and ``Z``, the one time format of the log."""
    if at.tzinfo is None:
        raise ValueError("a naive datetime has no time zone; the log keeps UTC only")
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Disclosure:
    """What was disclosed, to which organisation and person, for what purpose, when, by which channel."""

    patient_key: str
    disclosed_at: datetime
    kind: DisclosureKind
    channel: str  # ITI-43, RAD-69, C-MOVE; for notifications what the customer says (CD, PRINT, ...)
    controller_oid: str  # whose register the data belongs to
    recipient_org_oid: str | None
    recipient_org_name: str | None
    recipient_person: str | None
    purpose_of_use: str
    studies: tuple[str, ...] = ()
    documents: tuple[str, ...] = ()
    recorded_by: str = ""  # the archive's audit source id, or the notifying organisation's OID
    reference: str | None = None  # the notifying organisation's own id of the notification
    details: Mapping[str, str] = field(default_factory=dict)

    def content(self) -> dict[str, Any]:
        """The entry's content as stored and hashed (JSON types only)."""
        return {
            "disclosed_at": utc_text(self.disclosed_at),
            "kind": self.kind.value,
            "channel": self.channel,
            "controller_oid": self.controller_oid,
            "recipient_org_oid": self.recipient_org_oid,
            "recipient_org_name": self.recipient_org_name,
            "recipient_person": self.recipient_person,
            "purpose_of_use": self.purpose_of_use,
            "studies": list(self.studies),
            "documents": list(self.documents),
            "recorded_by": self.recorded_by,
            "reference": self.reference,
            "details": dict(self.details),
        }


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def chain_hash(
    *, patient_key: str, seq: int, entry_id: str, recorded_at: str, content: Mapping[str, Any], prev_hash: str
) -> str:
    body = {
        "patient_key": patient_key,
        "seq": seq,
        "entry_id": entry_id,
        "recorded_at": recorded_at,
        "content": content,
        "prev_hash": prev_hash,
    }
    return hashlib.sha256(canonical(body)).hexdigest()


@dataclass(frozen=True)
class ChainEntry:
    """One stored link of a patient's chain."""

    patient_key: str
    seq: int
    entry_id: str
    recorded_at: str
    content: Mapping[str, Any]
    prev_hash: str
    entry_hash: str

    @classmethod
    def new(
        cls,
        *,
        patient_key: str,
        seq: int,
        entry_id: str,
        recorded_at: datetime,
        content: Mapping[str, Any],
        prev_hash: str,
    ) -> ChainEntry:
        stamp = utc_text(recorded_at)
        digest = chain_hash(
            patient_key=patient_key,
            seq=seq,
            entry_id=entry_id,
            recorded_at=stamp,
            content=content,
            prev_hash=prev_hash,
        )
        return cls(patient_key, seq, entry_id, stamp, dict(content), prev_hash, digest)

    def computed_hash(self) -> str:
        return chain_hash(
            patient_key=self.patient_key,
            seq=self.seq,
            entry_id=self.entry_id,
            recorded_at=self.recorded_at,
            content=self.content,
            prev_hash=self.prev_hash,
        )


@dataclass(frozen=True)
class Anchor:
    """A chain head as written to the Object-Locked bucket."""

    patient_key: str
    seq: int
    entry_hash: str
    anchored_at: str
    location: str = ""


@dataclass(frozen=True)
class ChainVerdict:
    patient_key: str
    intact: bool
    entries: int
    last_seq: int
    last_hash: str
    anchored_seq: int
    broken_at: int | None = None
    reason: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "patient": self.patient_key,
            "intact": self.intact,
            "entries": self.entries,
            "last_seq": self.last_seq,
            "last_hash": self.last_hash,
            "anchored_up_to_seq": self.anchored_seq,
            "first_broken_link": self.broken_at,
            "reason": self.reason,
        }


def verify_chain(
    patient_key: str, entries: Iterable[ChainEntry], anchors: Iterable[Anchor] = ()
) -> ChainVerdict:
    """Walk the chain from its first entry; the first broken link (by ``seq``) and why."""
    ordered = sorted(entries, key=lambda e: e.seq)
    problems: list[tuple[int, str]] = []
    expected, prev = 1, GENESIS
    by_seq: dict[int, ChainEntry] = {}
    for entry in ordered:
        by_seq[entry.seq] = entry
        if entry.seq != expected and not problems:
            problems.append((expected, f"entry {expected} is missing (the next one present is {entry.seq})"))
        if entry.prev_hash != prev and not problems:
            problems.append(
                (entry.seq, f"entry {entry.seq} does not link to entry {entry.seq - 1} (prev_hash differs)")
            )
        if entry.computed_hash() != entry.entry_hash and not problems:
            problems.append((entry.seq, f"entry {entry.seq} was changed after it was written (hash differs)"))
        expected, prev = entry.seq + 1, entry.entry_hash
    last = ordered[-1] if ordered else None
    last_seq = last.seq if last else 0
    anchored = 0
    for anchor in sorted(anchors, key=lambda a: a.seq):
        anchored = max(anchored, anchor.seq)
        anchored_entry = by_seq.get(anchor.seq)
        if anchored_entry is None:
            problems.append(
                (
                    min(anchor.seq, last_seq + 1),
                    f"entry {anchor.seq}, anchored at {anchor.anchored_at}, is gone (entries were deleted)",
                )
            )
        elif anchored_entry.entry_hash != anchor.entry_hash:
            problems.append(
                (
                    anchor.seq,
                    f"entry {anchor.seq} differs from its anchor of {anchor.anchored_at} (chain rewritten)",
                )
            )
    if problems:
        seq, reason = min(problems, key=lambda p: p[0])
        return ChainVerdict(
            patient_key,
            False,
            len(ordered),
            last_seq,
            last.entry_hash if last else GENESIS,
            anchored,
            seq,
            reason,
        )
    return ChainVerdict(
        patient_key,
        True,
        len(ordered),
        last_seq,
        last.entry_hash if last else GENESIS,
        anchored,
        reason=f"{len(ordered)} entries intact" + (f", anchored up to entry {anchored}" if anchored else ""),
    )


REPORT_COLUMNS = (
    "seq",
    "disclosed_at",
    "recorded_at",
    "kind",
    "channel",
    "controller_oid",
    "recipient_org_oid",
    "recipient_org_name",
    "recipient_person",
    "purpose_of_use",
    "studies",
    "documents",
    "recorded_by",
    "reference",
    "entry_hash",
)


def report_rows(entries: Sequence[ChainEntry]) -> list[dict[str, Any]]:
    """One row per entry, oldest first: the patient's right-of-access and supervisors' report."""
    rows = []
    for entry in sorted(entries, key=lambda e: e.seq):
        c = entry.content
        rows.append(
            {
                "seq": entry.seq,
                "disclosed_at": c.get("disclosed_at"),
                "recorded_at": entry.recorded_at,
                "kind": c.get("kind"),
                "channel": c.get("channel"),
                "controller_oid": c.get("controller_oid"),
                "recipient_org_oid": c.get("recipient_org_oid"),
                "recipient_org_name": c.get("recipient_org_name"),
                "recipient_person": c.get("recipient_person"),
                "purpose_of_use": c.get("purpose_of_use"),
                "studies": list(c.get("studies") or []),
                "documents": list(c.get("documents") or []),
                "recorded_by": c.get("recorded_by"),
                "reference": c.get("reference"),
                "entry_hash": entry.entry_hash,
            }
        )
    return rows


def report_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """The report as CSV (RFC 4180, CRLF), lists joined by spaces."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["patient", *REPORT_COLUMNS], lineterminator="\r\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: " ".join(v) if isinstance(v, list) else v for k, v in row.items()})
    return out.getvalue()
