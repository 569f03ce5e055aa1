"""DynamoDB item sizes by the published rules (bench/index_size.py)."""

from __future__ import annotations

import pytest

from bench.index_size import item_bytes, number_bytes, size_of, value_bytes


def test_strings_count_utf8_bytes_and_names_count_too() -> None:
    # Given an item with an ASCII and a non-ASCII string
    item = {"id": {"S": "abc"}, "name": {"S": "Möttönen"}}
    # Then each attribute is its name's length plus its value's UTF-8 length
    assert item_bytes(item) == (2 + 3) + (4 + len("Möttönen".encode()))
    assert item_bytes(item, {"id"}) == 5


@pytest.mark.parametrize(
    ("number", "expected"),
    [("0", 1), ("7", 2), ("12", 2), ("123", 3), ("1000", 2), ("-12.50", 3), ("2026011512", 6)],
)
def test_numbers_take_one_byte_per_two_significant_digits_plus_one(number: str, expected: int) -> None:
    assert number_bytes(number) == expected


def test_collections_add_three_bytes_and_one_per_element() -> None:
    assert value_bytes({"L": [{"S": "ab"}, {"N": "1"}]}) == 3 + (1 + 2) + (1 + 2)
    assert value_bytes({"M": {"k": {"S": "v"}}}) == 3 + 1 + 1 + 1
    assert value_bytes({"SS": ["CT", "MR"]}) == 4
    assert value_bytes({"BOOL": True}) == value_bytes({"NULL": True}) == 1
    with pytest.raises(ValueError, match="unknown"):
        value_bytes({"X": 1})


def test_an_instance_is_billed_for_its_item_and_its_index_copy_each_with_100_bytes() -> None:
    size = size_of("x", {"sop_instance_uid": {"S": "1.2.3"}, "size": {"N": "513000"}})
    assert size.item_bytes == (16 + 5) + (4 + 3)
    assert size.stored_bytes == 2 * size.item_bytes + 200
    assert size.largest[0] == ("sop_instance_uid", 21)
