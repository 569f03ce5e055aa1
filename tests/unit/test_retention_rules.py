"""Retention arithmetic: the end of a study's retention from its rule and study date."""

from __future__ import annotations

from datetime import UTC, date, datetime

from archive.model.retention import (
    ExpiryRejection,
    ExpiryVerdict,
    RetentionRule,
    expiry_rejection_verdict,
    parse_study_date,
    rule_for,
)


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


def test_113039_verdict_follows_the_strictest_rule_of_the_study_modalities() -> None:
    now = datetime(2030, 6, 1, tzinfo=UTC)
    past, future = datetime(2030, 1, 1, tzinfo=UTC), datetime(2040, 1, 1, tzinfo=UTC)
    never = RetentionRule("o", "*", 10, expiry_rejection=ExpiryRejection.NEVER)
    expired = RetentionRule("o", "*", 10)
    early = RetentionRule("o", "*", 10, expiry_rejection=ExpiryRejection.EARLY)
    mammo_never = RetentionRule("o", "MG", 50, expiry_rejection=ExpiryRejection.NEVER)
    # No rule for the study, or no retention end known: not allowed (A775)
    assert expiry_rejection_verdict([], ["CT"], past, now) is ExpiryVerdict.NOT_ALLOWED
    assert expiry_rejection_verdict([early], ["CT"], None, now) is ExpiryVerdict.NOT_ALLOWED
    # NEVER refuses even after the end (A775); EXPIRED waits for the end (A776); EARLY never waits
    assert expiry_rejection_verdict([never], ["CT"], past, now) is ExpiryVerdict.NOT_ALLOWED
    assert expiry_rejection_verdict([expired], ["CT"], future, now) is ExpiryVerdict.NOT_EXPIRED
    assert expiry_rejection_verdict([expired], ["CT"], past, now) is ExpiryVerdict.ACCEPTED
    assert expiry_rejection_verdict([early], ["CT"], future, now) is ExpiryVerdict.ACCEPTED
    # A study with a mammogram falls under the MG rule too
    assert (
        expiry_rejection_verdict([early, mammo_never], ["CT", "MG"], future, now) is ExpiryVerdict.NOT_ALLOWED
    )
    assert expiry_rejection_verdict([early, mammo_never], ["CT"], future, now) is ExpiryVerdict.ACCEPTED


def test_early_destruction_rules_lock_only_their_minimum() -> None:
    study_date = date(2026, 1, 15)
    assert RetentionRule("o", "*", 10).lock_end_for(study_date) == datetime(2036, 1, 15, tzinfo=UTC)
    early = RetentionRule("o", "*", 10, expiry_rejection=ExpiryRejection.EARLY, minimum_days=30)
    assert early.end_for(study_date) == datetime(2036, 1, 15, tzinfo=UTC)
    assert early.lock_end_for(study_date) == datetime(2026, 2, 14, tzinfo=UTC)
