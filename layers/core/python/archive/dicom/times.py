"""DICOM dates and times (DA, TM, Timezone Offset From UTC) to timezone-aware UTC datetimes.

DICOM dates and times are local to the modality. Timezone Offset From UTC (0008,0201) says which
offset they are in, when present; otherwise they are taken to be in the organisation's configured
time zone, whose offset (daylight saving or not) is looked up for that very date and time.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo

_OFFSET = re.compile(r"^([+-])(\d{2})(\d{2})$")
_TIME = re.compile(r"^(\d{2})(?::?(\d{2})(?::?(\d{2})(?:\.(\d{1,6}))?)?)?$")


def offset_zone(offset: str | None) -> tzinfo | None:
    """The fixed zone of a Timezone Offset From UTC value (``+0200``), or None if absent/invalid."""
    match = _OFFSET.match((offset or "").strip())
    if not match:
        return None
    sign, hours, minutes = match.groups()
    delta = timedelta(hours=int(hours), minutes=int(minutes))
    if delta > timedelta(hours=14):
        return None
    return timezone(-delta if sign == "-" else delta)


def local_datetime(date: str | None, time: str | None) -> datetime | None:
    """A naive datetime from DA and TM (``HH``, ``HHMM``, ``HHMMSS``, ``HHMMSS.FFFFFF``); None if
    the date is missing or invalid; a missing or invalid time counts as midnight."""
    date = (date or "").strip()
    if len(date) != 8 or not date.isdigit():
        return None
    try:
        day = datetime.strptime(date, "%Y%m%d")
    except ValueError:
        return None
    match = _TIME.match((time or "").strip())
    if not match:
        return day
    hours, minutes, seconds, fraction = match.groups()
    try:
        return day.replace(
            hour=int(hours),
            minute=int(minutes or 0),
            second=min(int(seconds or 0), 59),  # DICOM allows a leap second 60
            microsecond=int((fraction or "0").ljust(6, "0")),
        )
    except ValueError:
        return None


def to_utc(
    date: str | None, time: str | None, *, offset: str | None, zone: str | ZoneInfo
) -> datetime | None:
    """DA + TM as UTC: with ``offset`` (0008,0201) when given, else in ``zone`` (e.g. Europe/Helsinki).

    A local time that occurs twice (the hour after a change back from summer time) is taken as its
    first occurrence (summer time); one that does not occur (the hour skipped in spring) is read with
    the offset in force before the change, as zoneinfo does.
    """
    local = local_datetime(date, time)
    if local is None:
        return None
    fixed = offset_zone(offset)
    if fixed is not None:
        return local.replace(tzinfo=fixed).astimezone(UTC)
    tz = zone if isinstance(zone, ZoneInfo) else ZoneInfo(zone)
    return local.replace(tzinfo=tz, fold=0).astimezone(UTC)


def dicom_date_time(moment: datetime, zone: str | ZoneInfo) -> tuple[str, str, str]:
    """DA, TM and Timezone Offset From UTC of ``moment`` (aware) in ``zone``."""
    tz = zone if isinstance(zone, ZoneInfo) else ZoneInfo(zone)
    local = moment.astimezone(tz)
    offset = local.utcoffset() or timedelta(0)
    minutes = int(offset.total_seconds() // 60)
    sign = "-" if minutes < 0 else "+"
    minutes = abs(minutes)
    return (
        local.strftime("%Y%m%d"),
        local.strftime("%H%M%S"),
        f"{sign}{minutes // 60:02d}{minutes % 60:02d}",
    )
