"""Retention arithmetic: the end of a study's retention from its rule and study date."""

from __future__ import annotations

from datetime import UTC, date, datetime

from archive.model.retention import (
    EndBasis,
    ExpiryRejection,
    ExpiryVerdict,
    RetentionBasis,
    RetentionEnds,
    RetentionRule,
    expiry_rejection_verdict,
    parse_study_date,
    retention_ends,
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


def test_a_death_rule_counts_from_the_death_once_known() -> None:
    # Given Finland's rule: 12 years from the death, 120 years from birth while the death is unknown
    rule = RetentionRule("o", "*", 12, basis=RetentionBasis.DEATH, unknown_death_years_from_birth=120)
    study_day, birth = date(2020, 3, 1), date(1950, 6, 30)
    # When the death is not known: the index end is 120 years from birth; the lock only covers the
    # years from the study (the earliest a death-based end can be), so it can never be too long
    unknown = retention_ends(rule, study_day, birth=birth)
    assert unknown == RetentionEnds(
        datetime(2070, 6, 30, tzinfo=UTC), EndBasis.BIRTH, datetime(2032, 3, 1, tzinfo=UTC)
    )
    # When the death is known: 12 years from it, lock and index alike
    known = retention_ends(rule, study_day, death=date(2025, 5, 5), birth=birth)
    assert known == RetentionEnds(
        datetime(2037, 5, 5, tzinfo=UTC), EndBasis.DEATH, datetime(2037, 5, 5, tzinfo=UTC)
    )
    # And imaging after death never ends before the years from the study (what locks hold already)
    post_mortem = retention_ends(rule, study_day, death=date(2020, 2, 1))
    assert post_mortem.end == post_mortem.lock_end == datetime(2032, 3, 1, tzinfo=UTC)


def test_a_death_rule_without_death_or_birth_is_never_due_and_a_study_date_rule_ignores_both() -> None:
    death_rule = RetentionRule("o", "*", 12, basis=RetentionBasis.DEATH, unknown_death_years_from_birth=120)
    never = retention_ends(death_rule, date(2020, 3, 1))
    assert (never.end, never.basis, never.lock_end) == (None, None, datetime(2032, 3, 1, tzinfo=UTC))
    without_fallback = RetentionRule("o", "*", 12, basis=RetentionBasis.DEATH)
    assert retention_ends(without_fallback, date(2020, 3, 1), birth=date(1950, 1, 1)).end is None
    plain = retention_ends(RetentionRule("o", "*", 12), date(2020, 3, 1), death=date(2021, 1, 1))
    assert (plain.end, plain.basis) == (datetime(2032, 3, 1, tzinfo=UTC), EndBasis.STUDY_DATE)


def test_under_an_early_rule_the_death_rule_locks_only_the_minimum() -> None:
    rule = RetentionRule(
        "o", "*", 12, expiry_rejection=ExpiryRejection.EARLY, minimum_days=30, basis=RetentionBasis.DEATH
    )
    ends = retention_ends(rule, date(2020, 3, 1), death=date(2025, 5, 5))
    assert ends.end == datetime(2037, 5, 5, tzinfo=UTC)
    assert ends.lock_end == datetime(2020, 3, 31, tzinfo=UTC)


def test_a_destruction_record_names_the_rules_that_govern_the_study() -> None:
    from archive.model.retention import StudyRetention, rules_for_study

    org = "1.2.246.10.1"
    default = RetentionRule(org, "*", 12)
    mammo = RetentionRule(
        org, "MG", 50, basis=RetentionBasis.DEATH, unknown_death_years_from_birth=120, approval_required=True
    )
    study = StudyRetention("1.2.3", org, None, None, 0, modalities=("CT", "MG", "SR"))
    # One rule per modality (the default for CT and SR, once), as at the PUTs
    assert rules_for_study([default, mammo], study.modalities) == [default, mammo]
    assert rules_for_study([default, mammo], StudyRetention("1.2.4", org, None, None, 0).modalities) == [
        default
    ]
    assert (
        rules_for_study([mammo], StudyRetention("1.2.5", org, None, None, 0, modalities=("CT",)).modalities)
        == []
    )
    assert default.describe() == f"{org} *: 12 years from the study date; 113039 EXPIRED"
    assert mammo.describe() == (
        f"{org} MG: 50 years from the patient's death (120 years from birth while not known); "
        "113039 EXPIRED, approval required"
    )
