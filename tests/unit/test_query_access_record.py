"""How one request's disclosures are split into access-record items (pure logic, no table)."""

from __future__ import annotations

from archive.data.access_log import UIDS_PER_RECORD, Disclosed, _chunks, _merge


def test_parts_are_per_patient_study_and_split_under_the_item_size_limit() -> None:
    # Given a retrieve of one big study of patient A and one instance of patient B, instance by instance
    uids = [f"1.2.3.{i}" for i in range(UIDS_PER_RECORD + 5)]
    disclosed = [Disclosed("A^^^1.2.246.21", "org", "1.2.9", [uid]) for uid in uids]
    disclosed.append(Disclosed("B^^^1.2.246.21", "org", "1.2.8", ["1.2.4.1"]))
    # When they are merged and chunked
    parts = list(_chunks(list(_merge(disclosed))))
    # Then patient A's study takes two items with every UID once, in order; B one item
    assert [(p.patient_key, len(u)) for p, u in parts] == [
        ("A^^^1.2.246.21", UIDS_PER_RECORD),
        ("A^^^1.2.246.21", 5),
        ("B^^^1.2.246.21", 1),
    ]
    assert [uid for p, u in parts if p.patient_key.startswith("A") for uid in u] == uids
