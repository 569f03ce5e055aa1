"""Retention arithmetic: the end of a study's retention from its rule and study date."""

from __future__ import annotations

from datetime import UTC, date, datetime

from archive.model.retention import RetentionRule, parse_study_date, rule_for


def test_end_is_years_and_days_after_the_study_date_at_midnight_utc() -> None:
    rule = RetentionRule("1.2.3", "*", years=12, days=3)
    assert rule.end_for(date(2026, 1, 15)) == datetime(2038, 1, 18, tzinfo=UTC)


def test_leap_day_study_ends_on_28_february() -> None:
    assert RetentionRule("1.2.3", "*", years=1).end_for(date(2024, 2, 29)) == datetime(
        2025, 2, 28, tzinfo=UTC
    )


def test_rule_for_the_modality_wins_over_the_default() -> None:
    default, mammo = RetentionRule("o", "*", 12), RetentionRule("o", "MG", 50)
    assert rule_for([default, mammo], "MG") is mammo
    assert rule_for([default, mammo], "CT") is default
    assert rule_for([default, mammo], None) is default
    assert rule_for([mammo], "CT") is None


def test_study_date_parsing() -> None:
    assert parse_study_date("20260115") == date(2026, 1, 15)
    assert parse_study_date("") is None
    assert parse_study_date("20261315") is None
