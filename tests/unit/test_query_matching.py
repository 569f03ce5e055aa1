"""PS3.4 C.2.2.2 attribute matching, the query identifier, and the choice of transfer syntax."""

from __future__ import annotations

import pytest
from archive.dicom.transcode import choose_syntax
from archive.errors import QueryRefused, TranscodingImpossible
from archive.services.query.find import QueryRequest, build_response, matches_all
from archive.services.query.matching import date_range, is_single_value, matches
from pydicom.dataset import Dataset
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    RLELossless,
)


@pytest.mark.parametrize(
    ("query", "stored", "vr", "expected"),
    [
        ("", "anything", "LO", True),  # universal
        ("*", None, "LO", True),
        ("ACC1", "ACC1", "SH", True),  # single value
        ("ACC1", "acc1", "SH", False),  # case-sensitive outside PN
        ("ACC1", None, "SH", False),  # no value: no match
        ("virt*", "Virtanen^Ville", "PN", True),  # wildcard, PN case-insensitive
        ("VIRTANEN^VILLE", "Virtanen^Ville", "PN", True),
        ("Vi?tanen*", "Virtanen^Ville", "PN", True),
        ("Vi?tanen", "Virtanen^Ville", "PN", False),
        ("C?", "CT", "CS", True),
        ("1.2.3", "1.2.3", "UI", True),
        ("1.2.3\\1.2.4", "1.2.4", "UI", True),  # UID list
        ("1.2.*", "1.2.3", "UI", False),  # no wildcards for UI
        ("20250101-20250630", "20250315", "DA", True),  # date range
        ("20250101-20250630", "20250701", "DA", False),
        ("20250101-", "20991231", "DA", True),
        ("-20250101", "20250101", "DA", True),
        ("-20250101", "20250102", "DA", False),
        ("1000-1100", "105959", "TM", True),  # time range, partial bounds
        ("1000-1100", "110059", "TM", True),
        ("1000-1100", "110100", "TM", False),
        ("10", "101500.123", "TM", True),
        ("MR", ["CT", "MR"], "CS", True),  # multi-valued stored (ModalitiesInStudy)
        ("CT\\PT", ["MR"], "CS", False),
    ],
)
def test_matching(query: str, stored: object, vr: str, expected: bool) -> None:
    assert matches(query, stored, vr) is expected  # type: ignore[arg-type]


def test_single_values_are_what_a_key_lookup_can_serve() -> None:
    assert is_single_value("020516C903K", "LO")
    assert not is_single_value("0205*", "LO")
    assert not is_single_value("", "LO")
    assert not is_single_value("1.2\\1.3", "UI")
    assert not is_single_value("20250101-", "DA")
    assert date_range("20250101-", "DA") == ("20250101", None)


def identifier(level: str, **keys: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def test_identifier_keeps_keys_and_refuses_unknown_levels() -> None:
    request = QueryRequest.from_identifier(
        identifier("STUDY", PatientID="X1", PatientName="", ModalitiesInStudy="CT\\MR"), "STUDY"
    )
    assert request.keys == {"PatientID": "X1", "PatientName": "", "ModalitiesInStudy": "CT\\MR"}
    assert request.summary() == {"PatientID": "X1", "ModalitiesInStudy": "CT\\MR"}
    with pytest.raises(QueryRefused):
        QueryRequest.from_identifier(identifier("FRAME"), "STUDY")
    with pytest.raises(QueryRefused):
        QueryRequest.from_identifier(identifier("PATIENT", PatientID="X1"), "STUDY")


def test_response_has_requested_keys_and_unique_keys_only() -> None:
    request = QueryRequest("STUDY", "STUDY", {"PatientName": "", "NumberOfStudyRelatedInstances": ""})
    attrs = {
        "PatientName": "Testinen^Matti",
        "StudyInstanceUID": "1.2.3",
        "NumberOfStudyRelatedInstances": 3,
        "StudyDescription": "not asked for",
    }
    ds = build_response(request, attrs, "ARCHIVE")
    assert str(ds.PatientName) == "Testinen^Matti"
    assert ds.StudyInstanceUID == "1.2.3"
    assert int(ds.NumberOfStudyRelatedInstances) == 3
    assert "StudyDescription" not in ds
    assert ds.RetrieveAETitle == "ARCHIVE"


def test_matches_all_skips_keys_matched_by_the_lookup() -> None:
    request = QueryRequest("STUDY", "STUDY", {"PatientID": "OLD-ID", "PatientName": "uusi*"})
    attrs = {"PatientID": "NEW-ID", "PatientName": "Uusi^Nimi"}
    assert not matches_all(request, attrs)
    assert matches_all(request, attrs, frozenset({"PatientID"}))


@pytest.mark.parametrize(
    ("stored", "accepted", "expected"),
    [
        (JPEGBaseline8Bit, {JPEGBaseline8Bit, ExplicitVRLittleEndian}, JPEGBaseline8Bit),  # as stored
        (JPEGBaseline8Bit, {ExplicitVRLittleEndian}, ExplicitVRLittleEndian),  # decompress
        (JPEG2000Lossless, {ImplicitVRLittleEndian}, ImplicitVRLittleEndian),
        (RLELossless, {ExplicitVRLittleEndian, ImplicitVRLittleEndian}, ExplicitVRLittleEndian),
        (ExplicitVRLittleEndian, {ImplicitVRLittleEndian}, ImplicitVRLittleEndian),
    ],
)
def test_choose_syntax(stored: str, accepted: set[str], expected: str) -> None:
    assert choose_syntax(stored, lambda ts: ts in accepted) == expected


def test_choose_syntax_fails_where_no_conversion_exists() -> None:
    with pytest.raises(TranscodingImpossible):
        choose_syntax(JPEGBaseline8Bit, lambda ts: ts == JPEG2000Lossless)
    with pytest.raises(TranscodingImpossible):
        choose_syntax(ExplicitVRBigEndian, lambda ts: ts == JPEG2000Lossless)


def test_big_endian_is_converted_to_little_endian() -> None:
    assert (
        choose_syntax(ExplicitVRBigEndian, lambda ts: ts == ExplicitVRLittleEndian) == ExplicitVRLittleEndian
    )
