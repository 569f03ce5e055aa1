"""Decoding ADT messages: character sets by MSH-18, the fields the archive reads, ERR locations."""

from __future__ import annotations

from pathlib import Path

import pytest
from archive.errors import MalformedMessage, UnsupportedCharacterSet
from archive.hl7.message import HierarchicDesignator, character_set, parse_adt

VECTORS = Path(__file__).resolve().parents[3] / "shared" / "testdata" / "hl7"


def message(pid5: str = "Äärelä^Åsa^Öljy", charset: str = "8859/1", encoding: str = "latin-1") -> bytes:
    text = (
        f"MSH|^~\\&|PAS|HOSP^1.2.246.10.1^ISO|ARCHIVE|NAT|20260101120000||ADT^A08^ADT_A01|42|P|2.5|||||FI|{charset}\r"
        f"PID|||020516C903K^^^&1.2.246.21&ISO~T123^^^ADT1||{pid5}||19160502|M\r"
    )
    return text.encode(encoding)


def test_the_published_a40_is_read() -> None:
    m = parse_adt((VECTORS / "ADT_A40-PatientMerge.hl7").read_bytes())
    assert (m.header.message_type, m.header.trigger_event, m.header.message_structure) == (
        "ADT",
        "A40",
        "ADT_A39",
    )
    assert (m.header.control_id, m.header.version, m.header.character_set) == ("1002122", "2.5.1", "8859/1")
    assert m.header.sending_facility == HierarchicDesignator("XYZ_RADIOLOGY")
    assert [(p.id, p.authority.namespace, p.location) for p in m.patient_ids] == [
        ("NEW_PID_1", "ADT1", "PID^1^3^1")
    ]
    assert [(p.id, p.authority.namespace, p.location) for p in m.prior_ids] == [
        ("OLD_PID_1", "ADT1", "MRG^1^1^1")
    ]
    assert m.demographics.patient_name == "New_Smith^Lucy^Mark"
    assert (m.demographics.birth_date, m.demographics.sex) == ("20141014", "F")
    assert m.dicom_character_set == "ISO_IR 100"


def test_the_published_a08_with_a_blank_msh18_is_ascii() -> None:
    m = parse_adt((VECTORS / "ADT_A08.hl7").read_bytes())
    assert m.header.character_set == ""
    assert m.dicom_character_set is None
    assert m.demographics.patient_name == "Smith^Shadow"


@pytest.mark.parametrize(
    ("charset", "encoding", "dicom"),
    [("8859/1", "latin-1", "ISO_IR 100"), ("UNICODE UTF-8", "utf-8", "ISO_IR 192")],
)
def test_finnish_names_are_decoded_by_msh18(charset: str, encoding: str, dicom: str) -> None:
    m = parse_adt(message(charset=charset, encoding=encoding))
    assert m.demographics.patient_name == "Äärelä^Åsa^Öljy"
    assert m.dicom_character_set == dicom


def test_bytes_that_do_not_match_msh18_are_refused_at_msh18() -> None:
    with pytest.raises(UnsupportedCharacterSet) as caught:
        parse_adt(message(charset="UNICODE UTF-8", encoding="latin-1"))
    assert caught.value.location == "MSH^1^18"


def test_non_ascii_without_msh18_is_refused() -> None:
    with pytest.raises(UnsupportedCharacterSet):
        parse_adt(message(charset="", encoding="utf-8"))


def test_an_unknown_character_set_is_refused() -> None:
    with pytest.raises(UnsupportedCharacterSet):
        parse_adt(message(pid5="Smith", charset="ISO IR87", encoding="ascii"))


def test_msh18_is_read_before_decoding_from_the_first_repetition() -> None:
    assert character_set(message(charset="unicode utf-8~8859/1", encoding="utf-8")) == "UNICODE UTF-8"


def test_every_pid3_repetition_and_the_hd_of_each_is_read() -> None:
    m = parse_adt(message())
    assert [(p.id, p.authority.oid, p.authority.namespace) for p in m.patient_ids] == [
        ("020516C903K", "1.2.246.21", ""),
        ("T123", None, "ADT1"),
    ]
    assert m.header.sending_facility.oid == "1.2.246.10.1"


def test_xpn_is_reordered_to_dicom_pn_and_escapes_are_resolved() -> None:
    # XPN: family^given^middle^suffix^prefix; DICOM PN: family^given^middle^prefix^suffix
    m = parse_adt(message(pid5="Virtanen\\T\\Koski^Matti^Juhani^Jr^Dr", charset="", encoding="ascii"))
    assert m.demographics.patient_name == "Virtanen&Koski^Matti^Juhani^Dr^Jr"


def test_an_hl7_null_name_means_delete() -> None:
    assert parse_adt(message(pid5='""', charset="", encoding="ascii")).demographics.patient_name == ""


def test_lf_segment_separators_are_tolerated() -> None:
    m = parse_adt(message(charset="", pid5="Smith", encoding="ascii").replace(b"\r", b"\n"))
    assert m.demographics.patient_name == "Smith"


@pytest.mark.parametrize("raw", [b"", b"hello", b"PID|||1\rMSH|^~\\&|", b"MSH|||||"])
def test_something_that_is_not_an_hl7_message_is_malformed(raw: bytes) -> None:
    with pytest.raises(MalformedMessage):
        parse_adt(raw)
