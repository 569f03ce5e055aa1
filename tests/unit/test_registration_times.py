"""DICOM local dates and times to UTC registry times, on both sides of daylight-saving changes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from archive.dicom.times import dicom_date_time, local_datetime, to_utc

HELSINKI = "Europe/Helsinki"


@pytest.mark.parametrize(
    ("date", "time", "expected"),
    [
        # winter (EET, UTC+2)
        ("20260115", "101500", datetime(2026, 1, 15, 8, 15, tzinfo=UTC)),
        # the spring change, 29 March 2026: 03:00 EET becomes 04:00 EEST
        ("20260329", "025959", datetime(2026, 3, 29, 0, 59, 59, tzinfo=UTC)),
        ("20260329", "040000", datetime(2026, 3, 29, 1, 0, tzinfo=UTC)),
        # summer (EEST, UTC+3)
        ("20260715", "101500", datetime(2026, 7, 15, 7, 15, tzinfo=UTC)),
        # the autumn change, 25 October 2026: 04:00 EEST becomes 03:00 EET; 03:30 occurs twice and
        # is read as its first occurrence (summer time)
        ("20261025", "023000", datetime(2026, 10, 24, 23, 30, tzinfo=UTC)),
        ("20261025", "033000", datetime(2026, 10, 25, 0, 30, tzinfo=UTC)),
        ("20261025", "043000", datetime(2026, 10, 25, 2, 30, tzinfo=UTC)),
        # the day changes in UTC
        ("20260101", "0130", datetime(2025, 12, 31, 23, 30, tzinfo=UTC)),
    ],
)
def test_local_times_convert_with_the_offset_in_force_on_that_day(
    date: str, time: str, expected: datetime
) -> None:
    assert to_utc(date, time, offset=None, zone=HELSINKI) == expected


def test_timezone_offset_from_utc_wins_over_the_configured_zone() -> None:
    # Given a summer time in Helsinki from a modality that says it runs on UTC+01:00
    assert to_utc("20260715", "101500", offset="+0100", zone=HELSINKI) == datetime(
        2026, 7, 15, 9, 15, tzinfo=UTC
    )
    assert to_utc("20260715", "101500", offset="-0330", zone=HELSINKI) == datetime(
        2026, 7, 15, 13, 45, tzinfo=UTC
    )
    # An invalid offset falls back to the zone
    assert to_utc("20260715", "101500", offset="+2500", zone=HELSINKI) == datetime(
        2026, 7, 15, 7, 15, tzinfo=UTC
    )


def test_another_configured_zone() -> None:
    assert to_utc("20260715", "101500", offset=None, zone="Europe/Stockholm") == datetime(
        2026, 7, 15, 8, 15, tzinfo=UTC
    )


@pytest.mark.parametrize(
    ("time", "expected"),
    [
        ("10", (10, 0, 0, 0)),
        ("1015", (10, 15, 0, 0)),
        ("101500.25", (10, 15, 0, 250000)),
        ("10:15:30", (10, 15, 30, 0)),
    ],
)
def test_partial_and_fractional_times(time: str, expected: tuple[int, int, int, int]) -> None:
    value = local_datetime("20260115", time)
    assert value is not None
    assert (value.hour, value.minute, value.second, value.microsecond) == expected


@pytest.mark.parametrize("date", ["", None, "2026011", "20261345", "abcdefgh"])
def test_missing_or_invalid_dates_give_no_time(date: str | None) -> None:
    assert to_utc(date, "101500", offset=None, zone=HELSINKI) is None


def test_dicom_date_time_of_a_moment_in_both_seasons() -> None:
    assert dicom_date_time(datetime(2026, 1, 15, 8, 15, tzinfo=UTC), HELSINKI) == (
        "20260115",
        "101500",
        "+0200",
    )
    assert dicom_date_time(datetime(2026, 7, 15, 7, 15, tzinfo=UTC), HELSINKI) == (
        "20260715",
        "101500",
        "+0300",
    )
