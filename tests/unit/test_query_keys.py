"""Which keys a C-FIND matches on, and when an entity without a value matches (PS3.4 C.2.2.2)."""

from __future__ import annotations

import pytest
from archive.services.query.find import HELD_AT, QueryRequest, QueryService, matches_all


def test_a_key_the_archive_holds_never_matches_an_entity_without_a_value() -> None:
    # Given a wildcard on the patient's name
    request = QueryRequest("STUDY", "STUDY", {"PatientName": "SMITH*"})
    # Then a patient without a name does not match, one named Smith does
    assert not matches_all(request, {"PatientID": "X1"}, held=HELD_AT["STUDY"])
    assert not matches_all(request, {"PatientID": "X1", "PatientName": None}, held=HELD_AT["STUDY"])
    assert matches_all(request, {"PatientName": "Smith^John"}, held=HELD_AT["STUDY"])


@pytest.mark.parametrize(("key", "value"), [("StudyDescription", "*CT*"), ("ModalitiesInStudy", "CT")])
def test_study_keys_without_a_stored_value_do_not_match(key: str, value: str) -> None:
    request = QueryRequest("STUDY", "STUDY", {key: value})
    assert not matches_all(request, {"StudyInstanceUID": "1.2.3", key: None}, held=HELD_AT["STUDY"])
    assert not matches_all(request, {"StudyInstanceUID": "1.2.3", key: []}, held=HELD_AT["STUDY"])


def test_keys_of_a_lower_level_wait_for_that_level() -> None:
    # Given a SERIES level query on Modality
    request = QueryRequest("STUDY", "SERIES", {"Modality": "CT"})
    study = {"StudyInstanceUID": "1.2.3"}
    # Then a study is not refused for lacking a series attribute, but a series without one is
    assert matches_all(request, study, held=HELD_AT["STUDY"])
    assert not matches_all(request, {**study, "SeriesInstanceUID": "1.2.3.4"}, held=HELD_AT["SERIES"])
    assert matches_all(request, {**study, "Modality": "CT"}, held=HELD_AT["SERIES"])


def test_keys_the_archive_does_not_hold_are_not_used_for_matching() -> None:
    request = QueryRequest("STUDY", "STUDY", {"PatientComments": "anything", "PatientName": "A*"})
    assert matches_all(request, {"PatientName": "Aho^Anna"}, held=HELD_AT["STUDY"])


@pytest.mark.parametrize(
    ("keys", "ranges", "modalities"),
    [
        ({"StudyDate": "20261130"}, [("20261130", "20261130")], []),
        ({"StudyDate": "20261101-20261130"}, [("20261101", "20261130")], []),
        ({"StudyDate": "20261101-"}, [("20261101", None)], []),
        ({"ModalitiesInStudy": "CT\\MR"}, [(None, None)], ["CT", "MR"]),
        ({"ModalitiesInStudy": "C*"}, [(None, None)], []),  # a wildcard cannot be looked up
    ],
)
def test_date_and_modality_keys_become_index_lookups(
    keys: dict[str, str], ranges: list[tuple[str | None, str | None]], modalities: list[str]
) -> None:
    request = QueryRequest("STUDY", "STUDY", keys)
    assert QueryService._date_ranges(request) == ranges
    assert QueryService._modalities(request) == modalities
