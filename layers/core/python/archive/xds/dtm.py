"""The XDS DTM time format (ITI TF-3 4.2.3.1.7): ``YYYY[MM[DD[hh[mm[ss]]]]]``, always UTC.

A value of lower precision stands for the first instant it covers (``2004`` is 2004-01-01 00:00 UTC).
Time zone offsets, fractions of seconds and separators are not part of the format and are refused.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

_DTM = re.compile(r"\d{4}(?:\d{2}){0,5}")


def parse_dtm(text: str) -> datetime:
    """The UTC datetime a DTM value stands for; ValueError when it is not a valid DTM."""
    value = text.strip()
    if not _DTM.fullmatch(value):
        raise ValueError(f"not a UTC DTM value (YYYY[MM[DD[hh[mm[ss]]]]]): {text!r}")
    parts = [int(value[0:4])] + [int(value[i : i + 2]) for i in range(4, len(value), 2)]
    year, month, day, hour, minute, second = (parts + [1, 1, 0, 0, 0][len(parts) - 1 :])[:6]
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def format_dtm(moment: datetime) -> str:
    """Full-precision DTM in UTC (a naive datetime is taken to be UTC already)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y%m%d%H%M%S")
