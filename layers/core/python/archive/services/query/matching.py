"""Attribute matching of PS3.4 C.2.2.2, as pure functions over the index's string values.

Supported: universal matching (empty value), single value matching, wildcard matching (``*`` and
``?``, for string VRs other than DA/TM/DT/UI), range matching for DA, TM and DT (``a-b``, ``a-``,
``-b``), list of UID matching, and value lists (backslash) for CS keys such as ModalitiesInStudy.
PN matching is case-insensitive (C.2.2.2.1 leaves case rules of PN to the SCP; customers' systems
send names in any case). Everything else is case-sensitive, as the standard requires.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

NO_WILDCARD_VRS = frozenset({"DA", "TM", "DT", "UI", "SQ"})
RANGE_VRS = frozenset({"DA", "TM", "DT"})
CASE_INSENSITIVE_VRS = frozenset({"PN"})

Stored = str | Iterable[str] | None


def is_universal(value: str) -> bool:
    """Empty value (or only ``*``): the key is a return key only."""
    stripped = value.strip()
    return stripped in ("", "*")


def has_wildcard(value: str) -> bool:
    return "*" in value or "?" in value


def is_single_value(value: str, vr: str) -> bool:
    """True if ``value`` names exactly one value: usable as a key lookup."""
    if is_universal(value) or "\\" in value:
        return False
    if vr in RANGE_VRS and "-" in value:
        return False
    return not (vr not in NO_WILDCARD_VRS and has_wildcard(value))


def uid_list(value: str) -> list[str]:
    """The UIDs of a (possibly single-valued) List of UID matching key."""
    return [v.strip() for v in value.split("\\") if v.strip()]


@lru_cache(maxsize=512)
def _wildcard_regex(pattern: str, case_insensitive: bool) -> re.Pattern[str]:
    parts = [".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern]
    return re.compile("".join(parts) + r"\Z", re.IGNORECASE | re.DOTALL if case_insensitive else re.DOTALL)


def _normalise_time(value: str, fill: str) -> str:
    """HHMMSS.FFFFFF with the unspecified tail filled, so that string order is time order."""
    digits = value.replace(":", "").strip()
    whole, _, fraction = digits.partition(".")
    whole = whole + fill * (6 - len(whole))
    fraction = fraction + fill * (6 - len(fraction))
    return f"{whole}.{fraction}"


def _normalise(value: str, vr: str, *, upper: bool) -> str:
    value = value.strip()
    if vr == "TM":
        return _normalise_time(value, "9" if upper else "0")
    if vr == "DA":
        return value.replace(".", "")  # ACR-NEMA style YYYY.MM.DD
    if vr == "DT":
        return value + ("9" if upper else "0") * max(0, 21 - len(value))
    return value


def date_range(value: str, vr: str = "DA") -> tuple[str | None, str | None]:
    """The (lower, upper) bounds of a range or single value, normalised; None = open."""
    value = value.strip()
    if "-" in value and vr in RANGE_VRS:
        low, _, high = value.partition("-")
        return (
            _normalise(low, vr, upper=False) if low.strip() else None,
            _normalise(high, vr, upper=True) if high.strip() else None,
        )
    return _normalise(value, vr, upper=False), _normalise(value, vr, upper=True)


def _match_one(query: str, stored: str, vr: str) -> bool:
    stored = stored.strip()
    if vr in RANGE_VRS:
        if not stored:
            return False
        low, high = date_range(query, vr)
        key_low = _normalise(stored, vr, upper=False)
        key_high = _normalise(stored, vr, upper=True)
        return (low is None or key_high >= low) and (high is None or key_low <= high)
    insensitive = vr in CASE_INSENSITIVE_VRS
    if vr not in NO_WILDCARD_VRS and has_wildcard(query):
        return _wildcard_regex(query, insensitive).match(stored) is not None
    if insensitive:
        return query.strip().casefold() == stored.casefold()
    return query.strip() == stored


def matches(query: str, stored: Stored, vr: str) -> bool:
    """Whether a stored value (or any of several stored values) matches one query key."""
    if is_universal(query):
        return True
    values = [stored] if isinstance(stored, str) else list(stored or ())
    values = [v for v in values if v is not None]
    if not values:
        # C.2.2.2: an entity with no value for a non-universal key does not match.
        return False
    alternatives = uid_list(query) if "\\" in query else [query]
    return any(_match_one(q, v, vr) for q in alternatives for v in values)
