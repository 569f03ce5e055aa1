"""The disclosure log's hash chain: intact, edited, deleted, rewritten behind an anchor; the report."""

from __future__ import annotations

import csv
import io
import itertools
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from archive.errors import InvalidNotification
from archive.model.disclosure import (
    GENESIS,
    Anchor,
    ChainEntry,
    Disclosure,
    DisclosureKind,
    report_csv,
    report_rows,
    verify_chain,
)
from archive.services.disclosure import DisclosureNotification, parse_utc

PATIENT = "020516C903K^^^1.2.246.21"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def disclosure(n: int) -> Disclosure:
    return Disclosure(
        patient_key=PATIENT,
        disclosed_at=T0 + timedelta(minutes=n),
        kind=DisclosureKind.XDS,
        channel="RAD-69",
        controller_oid="1.2.246.10.1",
        recipient_org_oid="1.2.246.10.2",
        recipient_org_name="Clinic",
        recipient_person=f"Dr. {n}",
        purpose_of_use="TREATMENT",
        studies=(f"1.2.3.{n}",),
        recorded_by="ARCHIVE",
    )


def chain(length: int) -> list[ChainEntry]:
    entries: list[ChainEntry] = []
    for n in range(1, length + 1):
        entries.append(
            ChainEntry.new(
                patient_key=PATIENT,
                seq=n,
                entry_id=f"e{n}",
                recorded_at=T0 + timedelta(minutes=n, seconds=1),
                content=disclosure(n).content(),
                prev_hash=entries[-1].entry_hash if entries else GENESIS,
            )
        )
    return entries


def anchor(entry: ChainEntry) -> Anchor:
    return Anchor(PATIENT, entry.seq, entry.entry_hash, "2026-03-01T13:00:00.000Z")


def test_an_untouched_chain_is_intact_and_each_entry_links_to_the_previous() -> None:
    entries = chain(4)

    verdict = verify_chain(PATIENT, entries, [anchor(entries[2])])

    assert verdict.intact and (verdict.entries, verdict.last_seq, verdict.anchored_seq) == (4, 4, 3)
    assert entries[0].prev_hash == GENESIS
    assert all(b.prev_hash == a.entry_hash for a, b in itertools.pairwise(entries))


def test_an_edited_entry_is_the_first_broken_link() -> None:
    entries = chain(4)
    edited = dict(entries[1].content) | {"recipient_org_name": "Someone else"}
    entries[1] = replace(entries[1], content=edited)

    verdict = verify_chain(PATIENT, entries)

    assert (verdict.intact, verdict.broken_at) == (False, 2)
    assert "changed" in verdict.reason


def test_an_edit_with_its_hash_recomputed_breaks_the_next_link() -> None:
    entries = chain(4)
    edited = dict(entries[1].content) | {"purpose_of_use": "OTHER"}
    entries[1] = ChainEntry.new(
        patient_key=PATIENT,
        seq=2,
        entry_id="e2",
        recorded_at=T0,
        content=edited,
        prev_hash=entries[0].entry_hash,
    )

    verdict = verify_chain(PATIENT, entries)

    assert (verdict.intact, verdict.broken_at) == (False, 3)
    assert "does not link" in verdict.reason


def test_a_deleted_entry_leaves_a_gap() -> None:
    entries = chain(4)
    del entries[1]

    verdict = verify_chain(PATIENT, entries)

    assert (verdict.intact, verdict.broken_at) == (False, 2)
    assert "missing" in verdict.reason


def test_only_the_anchor_shows_a_deleted_tail_or_a_consistently_rewritten_chain() -> None:
    entries = chain(4)
    anchored = anchor(entries[3])
    # The last entry deleted: the rest is a valid chain of three
    assert verify_chain(PATIENT, entries[:3]).intact
    truncated = verify_chain(PATIENT, entries[:3], [anchored])
    assert (truncated.intact, truncated.broken_at) == (False, 4)
    # Every entry rewritten, hashes and links recomputed: only the anchor differs
    rewritten: list[ChainEntry] = []
    for entry in entries:
        rewritten.append(
            ChainEntry.new(
                patient_key=PATIENT,
                seq=entry.seq,
                entry_id=entry.entry_id,
                recorded_at=T0,
                content=dict(entry.content) | {"recipient_person": "nobody"},
                prev_hash=rewritten[-1].entry_hash if rewritten else GENESIS,
            )
        )
    assert verify_chain(PATIENT, rewritten).intact
    verdict = verify_chain(PATIENT, rewritten, [anchored])
    assert (verdict.intact, verdict.broken_at) == (False, 4)
    assert "rewritten" in verdict.reason


def test_the_report_has_a_row_per_disclosure_and_a_csv_form() -> None:
    rows = [{"patient": PATIENT, **row} for row in report_rows(list(reversed(chain(2))))]

    assert [r["seq"] for r in rows] == [1, 2]
    assert rows[0]["disclosed_at"] == "2026-03-01T12:01:00.000Z"
    parsed = list(csv.DictReader(io.StringIO(report_csv(rows))))
    assert parsed[1]["recipient_person"] == "Dr. 2" and parsed[1]["studies"] == "1.2.3.2"


@pytest.mark.parametrize(
    "value",
    ["2026-01-15T10:15:00+02:00", "2026-01-15T10:15:00", "15.1.2026 10:15", "", None, "2999-01-01T00:00:00Z"],
)
def test_times_must_be_utc_and_not_in_the_future(value: object) -> None:
    with pytest.raises(InvalidNotification) as refused:
        parse_utc(value, "disclosed_at")
    assert refused.value.field == "disclosed_at"


def test_utc_times_are_accepted_in_both_spellings() -> None:
    assert parse_utc("2026-01-15T10:15:00Z", "t") == parse_utc("2026-01-15T10:15:00+00:00", "t")


def test_a_notification_names_the_missing_field() -> None:
    body = {
        "notification_id": "N1",
        "patient": {"id": "X", "issuer": "1.2.3"},
        "studies": ["1.2.3"],
        "recipient": {"person": "Dr."},
        "purpose_of_use": "TREATMENT",
        "channel": "CD",
        "disclosed_at": "2026-01-15T10:15:00Z",
    }

    with pytest.raises(InvalidNotification) as refused:
        DisclosureNotification.from_json(body, notifier_oid="1.2.246.10.1")

    assert refused.value.field == "recipient.organisation_oid"
    body["recipient"] = {"organisation_name": "Clinic"}
    assert DisclosureNotification.from_json(body, notifier_oid="1.2.246.10.1").recipient_org_name == "Clinic"
