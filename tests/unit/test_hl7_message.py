"""Decoding ADT messages: character sets by MSH-18, the fields the archive reads, ERR locations."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from archive.errors import InvalidFieldValue, MalformedMessage, UnsupportedCharacterSet
from archive.hl7.message import HierarchicDesignator, character_set, parse_adt

# The steering repository's shared/testdata beside the clone; ARCHIVE_TESTDATA points elsewhere.
VECTORS = (
    Path(os.environ.get("ARCHIVE_TESTDATA") or Path(__file__).resolve().parents[3] / "shared" / "testdata")
    / "hl7"
)


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


# --- strict input (issue 15) ------------------------------------------------------------------

HEAD = "MSH|^~\\&|PAS|XYZ_RADIOLOGY|ARCHIVE|NAT|20260101||ADT^A08^ADT_A01|42|P|2.5.1||||||{charset}\r"


def adt08(pid: str = "PID|||T1^^^ADT1||Doe^John||19160502|M", *, charset: str = "", tail: str = "") -> bytes:
    return (HEAD.format(charset=charset) + pid + "\r" + tail).encode("utf-8" if charset else "ascii")


@pytest.mark.parametrize(
    "raw",
    [
        adt08(tail="\r\r"),
        (HEAD.format(charset="") + "\rEVN||20260101\r\r  \rPID|||T1^^^ADT1||Doe^John||19160502|M\r").encode(),
        (HEAD.format(charset="") + "\r\n\r\nPID|||T1^^^ADT1||Doe^John||19160502|M\r\n").encode(),
    ],
    ids=["trailing", "between segments and whitespace-only", "CRLF"],
)
def test_blank_segments_are_dropped(raw: bytes) -> None:
    message = parse_adt(raw)
    assert message.patient_ids[0].id == "T1"
    assert message.demographics.patient_name == "Doe^John"
    assert "\r\r" not in message.text


@pytest.mark.parametrize(
    ("name", "charset", "expected"),
    [
        ("Doe\\F\\\\S\\\\T\\\\R\\\\E\\x^John", "", "Doe|^&~\\x^John"),
        ("D\\H\\oe\\N\\^John", "", "Doe^John"),
        ("\\X41\\rel\\X61\\^John", "", "Arela^John"),
        ("\\XC384\\rel\\XC3A4\\^John", "UNICODE UTF-8", "Ärelä^John"),
        ("\\XC4\\rel\\XE4\\^John", "8859/1", "Ärelä^John"),
    ],
)
def test_escapes_decode_by_the_documented_rule(name: str, charset: str, expected: str) -> None:
    raw = (HEAD.format(charset=charset) + f"PID|||T1^^^ADT1||{name}\r").encode("ascii")
    if "\\S\\" in name:
        with pytest.raises(InvalidFieldValue):  # a delimiter that PN cannot hold
            parse_adt(raw)
        return
    assert parse_adt(raw).demographics.patient_name == expected


@pytest.mark.parametrize(
    "name",
    [
        "Doe\\XZZ\\",
        "Doe\\X00\\",
        "Doe\\XD800\\",
        "Doe\\XC3A4\\",
        "Doe\\X4\\",
        "Doe\\X 41\\",
        "Doe\\",
        "Doe\\Q\\",
        "Doe\\C2842\\",
        "Doe\\M2442\\",
        "Doe\\Zab\\",
        "Doe\\.br\\",
        "Doe\\X0D\\",
    ],
)
def test_malformed_or_unsupported_escapes_are_refused_with_102(name: str) -> None:
    with pytest.raises(InvalidFieldValue) as caught:
        parse_adt(adt08(f"PID|||T1^^^ADT1||{name}^John"))
    assert caught.value.location == "PID^1^5^1"


@pytest.mark.parametrize(
    ("pid", "location"),
    [
        ("PID|||" + "9" * 100_000 + "^^^ADT1||Doe", "PID^1^3^1^1"),
        ("PID|||" + "9" * 65 + "^^^ADT1||Doe", "PID^1^3^1^1"),
        ("PID|||T\\E\\1^^^ADT1||Doe", "PID^1^3^1^1"),
        ("PID|||T\\S\\1^^^ADT1||Doe", "PID^1^3^1^1"),
        ("PID|||T\x001^^^ADT1||Doe", "PID^1^3^1^1"),
        ("PID|||T1^^^" + "A" * 65 + "||Doe", "PID^1^3^1^4"),
        ("PID|||T1^^^ADT1||" + "D" * 65, "PID^1^5^1"),
        ("PID|||T1^^^ADT1||" + "D" * 40 + "^" + "J" * 30, "PID^1^5^1"),
        ("PID|||T1^^^ADT1||Doe=Ichiro", "PID^1^5^1"),
        ("PID|||T1^^^ADT1||Doe||19161302", "PID^1^7"),
        ("PID|||T1^^^ADT1||Doe||1916", "PID^1^7"),
        ("PID|||T1^^^ADT1||Doe||19160502|Q", "PID^1^8"),
    ],
    ids=[
        "100k ID",
        "65-char ID",
        "backslash in ID",
        "caret in ID",
        "NUL in ID",
        "long namespace",
        "long family",
        "long PN",
        "PN group separator",
        "no such date",
        "partial date",
        "sex not in table 0001",
    ],
)
def test_values_the_archive_cannot_keep_are_refused_before_aa(pid: str, location: str) -> None:
    with pytest.raises(InvalidFieldValue) as caught:
        parse_adt(adt08(pid))
    assert caught.value.location == location


@pytest.mark.parametrize(
    ("sent", "kept"), [("M", "M"), ("f", "F"), ("O", "O"), ("A", "O"), ("N", "O"), ("U", "")]
)
def test_administrative_sex_maps_to_dicom(sent: str, kept: str) -> None:
    assert parse_adt(adt08(f"PID|||T1^^^ADT1||Doe||19160502|{sent}")).demographics.sex == kept


def test_a_long_control_id_is_refused() -> None:
    raw = adt08().replace(b"|42|", b"|" + b"7" * 200 + b"|")
    with pytest.raises(InvalidFieldValue) as caught:
        parse_adt(raw)
    assert caught.value.location == "MSH^1^10"


@pytest.mark.parametrize(
    "raw",
    [
        b"MSH|^~\\&|PAS|X|A|B|2026||ADT^A08|1|P|2.5\rpid|||T1\r",
        b"MSH|^~\\&|PAS|X|A|B|2026||ADT^A08|1|P|2.5\rPIDX|T1\r",
        b"MSH|^~\\&|PAS|X|A|B|2026||ADT^A08|1|P|2.5\r\x00\x01\x02\r",
        b"MSH|^~ &|PAS|X|A|B|2026||ADT^A08|1|P|2.5\r",
        b"MSH|^~\\a|PAS|X|A|B|2026||ADT^A08|1|P|2.5\r",
        b"MSH|^~\\&XY|PAS|X|A|B|2026||ADT^A08|1|P|2.5\r",
        b"MSH\xff^~\\&\xffPAS\r",
    ],
    ids=[
        "lower-case segment",
        "long segment id",
        "binary segment",
        "space in MSH-2",
        "letter in MSH-2",
        "MSH-2 too long",
        "non-ASCII MSH-1",
    ],
)
def test_broken_segments_or_delimiters_are_malformed(raw: bytes) -> None:
    with pytest.raises((MalformedMessage, UnsupportedCharacterSet)):
        parse_adt(raw)


def test_a_v27_truncation_character_in_msh2_is_accepted() -> None:
    raw = adt08().replace(b"MSH|^~\\&|", b"MSH|^~\\&#|")
    assert parse_adt(raw).header.encoding_characters == "^~\\&"


def _pid_death(death: str, indicator: str = "") -> str:
    """A PID with PID-29 (death date/time) and PID-30 (death indicator)."""
    return "PID|||T1^^^ADT1||Doe^John||19160502|M" + "|" * 21 + f"{death}|{indicator}"


@pytest.mark.parametrize(
    ("death", "indicator", "expected"),
    [
        ("20260101", "Y", "20260101"),
        ("202601011230+0200", "", "20260101"),  # a DTM: the day is kept
        ('""', "", ""),  # HL7 null: the death is retracted
        ("", "N", ""),  # not dead: retracted
        ("", "Y", None),  # dead, the day unknown: nothing to count from, nothing changes
        ("", "", None),  # not sent: left as it is
    ],
)
def test_pid29_and_pid30_give_the_death_date(death: str, indicator: str, expected: str | None) -> None:
    assert parse_adt(adt08(_pid_death(death, indicator))).demographics.death_date == expected


@pytest.mark.parametrize(
    ("death", "indicator", "location"),
    [
        ("2026", "Y", "PID^1^29"),  # a year is not a day to count from
        ("20261302", "Y", "PID^1^29"),
        ("yesterday", "", "PID^1^29"),
        ("20260101", "N", "PID^1^30"),  # a death date and "not dead"
        ("", "X", "PID^1^30"),
    ],
)
def test_an_unusable_death_is_refused_at_its_field(death: str, indicator: str, location: str) -> None:
    with pytest.raises(InvalidFieldValue) as caught:
        parse_adt(adt08(_pid_death(death, indicator)))
    assert caught.value.location == location
