"""The cost model's arithmetic, checked against hand-computed figures for simple workloads."""

from __future__ import annotations

import math

import pytest

from bench.cost_model import (
    AHI_MEASURED_SIZE_RATIO,
    GB,
    PACK_LAMBDA_GB,
    Assumptions,
    Prices,
    Workload,
    design_options,
    estimate_healthimaging,
    estimate_ours,
    instances_per_study,
    listener_tasks,
    parse_prices,
    render,
    render_options,
)

# 1 GiB study of 1,024 instances of 1 MiB-ish, one year, no retrievals: easy numbers by hand.
ONE_GIB_MB = GB / 1e6


def line(estimate_lines: list, item: str) -> float:  # type: ignore[type-arg]
    matches = [entry.usd for entry in estimate_lines if entry.item == item]
    assert len(matches) == 1, item
    return matches[0]


def workload(**overrides: float) -> Workload:
    values = {
        "studies_per_day": 100.0,
        "study_mb": ONE_GIB_MB,
        "retention_years": 1.0,
        "retrievals_per_study": 0.0,
        "instance_kb": ONE_GIB_MB * 1000 / 1024,
    }
    values.update(overrides)
    return Workload(**values)  # type: ignore[arg-type]


def test_instances_per_study_is_size_over_instance_size() -> None:
    # Given a 150 MB study of 512 KB instances, when counted, then about 293 instances
    assert instances_per_study(workload(study_mb=150, instance_kb=512)) == pytest.approx(292.97, abs=0.01)
    # And never fewer than one
    assert instances_per_study(workload(study_mb=0.001, instance_kb=512)) == 1.0


def test_storage_follows_the_lifecycle_standard_then_glacier_ir() -> None:
    # Given a 1 GiB study kept 12 months, 30 days in Standard
    prices = Prices()
    est = estimate_ours(workload(), prices, Assumptions(standard_days=30.0))
    hot = 30 / (365 / 12)
    # Then Standard is billed for the hot months and Glacier IR for the rest, per GiB-month
    assert line(est.per_study, "S3 Standard storage") == pytest.approx(hot * prices.s3_standard_gb_month)
    assert line(est.per_study, "S3 Glacier IR storage") == pytest.approx(
        (12 - hot) * prices.s3_glacier_ir_gb_month
    )
    # And each of the 1,024 objects is transitioned once
    assert line(est.per_study, "S3 lifecycle transitions") == pytest.approx(
        1024 / 1000 * prices.s3_transition_glacier_ir_per_1000
    )


def test_small_objects_stay_in_standard_for_life() -> None:
    # Given instances of 64 KB (under the 128 KiB lifecycle minimum)
    est = estimate_ours(workload(instance_kb=64), Prices(), Assumptions())
    # Then nothing is in Glacier IR and nothing is transitioned
    assert line(est.per_study, "S3 Glacier IR storage") == 0.0
    assert line(est.per_study, "S3 lifecycle transitions") == 0.0
    assert line(est.per_study, "S3 Standard storage") == pytest.approx(12 * Prices().s3_standard_gb_month)


def test_requests_dynamodb_lambda_scale_with_instances() -> None:
    prices = Prices()
    a = Assumptions(instance_table_infrequent_access=False)
    est = estimate_ours(workload(), prices, a)
    n = 1024
    assert line(est.per_study, "S3 PUT (C-STORE)") == pytest.approx(n / 1000 * prices.s3_put_per_1000)
    wru = n * a.wru_per_instance + a.wru_per_study
    assert line(est.per_study, "DynamoDB writes") == pytest.approx(
        wru / 1e6 * prices.dynamodb_wru_per_million
    )
    gb_s = n * a.lambda_ms_per_instance / 1000 * a.lambda_memory_gb
    assert line(est.per_study, "Lambda (index)") == pytest.approx(
        gb_s * prices.lambda_gb_second + n / a.lambda_batch / 1e6 * prices.lambda_per_million_requests
    )


def test_retrievals_from_glacier_pay_the_retrieval_fee_and_egress() -> None:
    # Given two retrievals, none while the study is hot
    prices = Prices()
    a = Assumptions(retrievals_while_hot=0.0)
    est = estimate_ours(workload(retrievals_per_study=2), prices, a)
    n = 1024
    expected = 2 * (n / 1000 * prices.s3_glacier_ir_get_per_1000 + 1.0 * prices.s3_glacier_ir_retrieval_gb)
    assert line(est.per_study, "S3 GET + retrieval fee (C-MOVE/C-GET)") == pytest.approx(expected)
    assert line(est.per_study, "Data transfer out (retrievals)") == pytest.approx(2 * prices.egress_gb)


def test_listener_tasks_cover_the_peak_and_never_drop_below_the_minimum() -> None:
    # Given 100 studies/day of 1,024 instances in 10 working hours, peak x2, 200 CPU-s per 1,000
    a = Assumptions(listener_cpu_s_per_1000=200.0)
    peak = 100 * 1024 / 36000 * 2  # instances/s
    expected = math.ceil(peak * 0.2 / 0.6)
    assert listener_tasks(workload(), a) == max(2, expected)
    # And a tiny workload still gets the minimum (one task per AZ)
    assert listener_tasks(workload(studies_per_day=1), a) == 2


def test_monthly_steady_state_is_intake_times_lifetime_cost_plus_fixed() -> None:
    est = estimate_ours(workload(), Prices(), Assumptions())
    assert est.monthly_steady_state == pytest.approx(
        100 * 365 / 12 * est.per_study_total + est.monthly_fixed_total
    )


def test_healthimaging_tiers_minimum_size_and_api_calls() -> None:
    prices = Prices()
    a = Assumptions(retrievals_while_hot=0.0)
    # Given a 1 GiB study retrieved once from the archive tier
    est = estimate_healthimaging(workload(retrievals_per_study=1), prices, a)
    # Then 1 month (import) + 1 month (after the retrieval) in Frequent Access, the rest archived
    assert line(est.per_study, "Frequent Access storage") == pytest.approx(2 * prices.ahi_frequent_gb_month)
    assert line(est.per_study, "Archive Instant Access storage") == pytest.approx(
        10 * prices.ahi_archive_gb_month
    )
    assert line(est.per_study, "API calls") == pytest.approx(1024 / 1000 * prices.ahi_api_per_1000)
    # And a 1 MB study is billed as 5 MB
    small = estimate_healthimaging(workload(study_mb=1, instance_kb=512), prices, a)
    assert line(small.per_study, "Frequent Access storage") == pytest.approx(
        5e6 / GB * 1 * prices.ahi_frequent_gb_month
    )


def test_price_overrides_are_applied_and_unknown_names_refused() -> None:
    assert parse_prices(["egress_gb=0.05"]).egress_gb == 0.05
    with pytest.raises(ValueError, match="unknown price"):
        parse_prices(["no_such_price=1"])


def test_render_lists_both_options_and_every_price() -> None:
    text = render(workload(), Prices(), Assumptions())
    assert "AWS HealthImaging" in text
    for name in ("s3_glacier_ir_gb_month", "ahi_archive_gb_month", "fargate_vcpu_hour"):
        assert f"| {name} |" in text


def test_deep_archive_bills_40_kb_more_per_object_and_a_transition_per_object() -> None:
    # Given a study of 1,024 instances kept 12 years, Deep Archive after 2 years, no retrievals
    w = workload(retention_years=12.0)
    a = Assumptions(standard_days=90.0, deep_archive_days=730.0)
    prices = Prices()
    lines = estimate_ours(w, prices, a).per_study
    deep_months = 12 * 12 - 730 / (365 / 12)
    # Then Deep Archive storage is the data plus 32 KB per object at its rate and 8 KB at Standard's
    expected = deep_months * (
        1.0 * prices.s3_deep_archive_gb_month
        + 1024 * 32_000 / GB * prices.s3_deep_archive_gb_month
        + 1024 * 8_000 / GB * prices.s3_standard_gb_month
    )
    assert line(lines, "S3 Deep Archive storage (+40 KB per object)") == pytest.approx(expected, rel=1e-3)
    # And each object pays a transition to Glacier IR and one to Deep Archive
    assert line(lines, "S3 lifecycle transitions") == pytest.approx(
        1024 / 1000 * (prices.s3_transition_glacier_ir_per_1000 + prices.s3_transition_deep_archive_per_1000)
    )


def test_packing_a_cold_study_into_one_object_removes_per_object_fees() -> None:
    w = workload(retention_years=12.0, retrievals_per_study=2.0)
    as_stored = estimate_ours(w, Prices(), Assumptions(retrievals_while_deep=0.5))
    packed = estimate_ours(w, Prices(), Assumptions(retrievals_while_deep=0.5, cold_objects_per_study=1))
    # Then the Deep Archive transitions, overhead and restore requests are those of one object
    assert line(packed.per_study, "S3 lifecycle transitions") < line(
        as_stored.per_study, "S3 lifecycle transitions"
    )
    assert line(packed.per_study, "S3 Deep Archive restores (Bulk)") < line(
        as_stored.per_study, "S3 Deep Archive restores (Bulk)"
    )
    assert line(packed.per_study, "S3 packing of the cold study") > 0
    assert packed.per_study_total < as_stored.per_study_total


def test_infrequent_access_instance_table_stores_cheaper_and_writes_dearer() -> None:
    # Given the same 1 GiB study kept 12 years, the instance table Standard or Infrequent Access
    prices = Prices()
    long = workload(retention_years=12.0)
    standard = estimate_ours(long, prices, Assumptions(instance_table_infrequent_access=False))
    ia = Assumptions(instance_table_infrequent_access=True)
    cheap = estimate_ours(long, prices, ia)
    n = 1024

    # Then storage is billed at the Infrequent Access rate for the whole retention time
    index_gb = n * ia.index_bytes_per_instance / GB
    assert line(cheap.per_study, "DynamoDB storage") == pytest.approx(
        index_gb * 144 * prices.dynamodb_ia_gb_month
    )
    assert line(standard.per_study, "DynamoDB storage") == pytest.approx(
        index_gb * 144 * prices.dynamodb_gb_month
    )
    # And the instance table's share of the writes costs the Infrequent Access rate
    extra = (
        n
        * ia.instance_table_wru_per_instance
        / 1e6
        * (prices.dynamodb_ia_wru_per_million - prices.dynamodb_wru_per_million)
    )
    assert line(cheap.per_study, "DynamoDB writes") - line(
        standard.per_study, "DynamoDB writes"
    ) == pytest.approx(extra)
    assert cheap.per_study_total < standard.per_study_total


def test_cold_index_bytes_apply_only_while_the_study_is_in_deep_archive() -> None:
    # Given a 1 GiB study kept 12 years, Deep Archive from day 365, 100 bytes per instance left when cold
    prices = Prices()
    a = Assumptions(deep_archive_days=365.0, cold_index_bytes_per_instance=100.0)
    est = estimate_ours(workload(retention_years=12.0), prices, a)
    n = 1024
    deep_from = 365 / (365 / 12)

    # Then the full index is billed until then and the small one afterwards
    expected = (
        n * a.index_bytes_per_instance / GB * deep_from + n * 100.0 / GB * (144 - deep_from)
    ) * prices.dynamodb_ia_gb_month
    assert line(est.per_study, "DynamoDB storage") == pytest.approx(expected)


def test_packing_and_compression_shrink_the_cold_storage_and_cost_the_packing_work() -> None:
    # Given a 1 GiB study kept 12 years with Glacier IR from day 90, packed and compressed to a fifth
    prices = Prices()
    a = Assumptions(
        deep_archive_days=0.0, cold_objects_per_study=1.0, cold_size_ratio=0.2, pack_seconds_per_instance=0.1
    )
    est = estimate_ours(workload(retention_years=12.0), prices, a)
    n = 1024
    ir_months = 144 - 90 / (365 / 12)

    # Then Glacier IR bills a fifth of the bytes, one object is transitioned, and packing costs
    # reading every instance, writing the pack and the Lambda seconds
    assert line(est.per_study, "S3 Glacier IR storage") == pytest.approx(
        0.2 * ir_months * prices.s3_glacier_ir_gb_month
    )
    assert line(est.per_study, "S3 lifecycle transitions") == pytest.approx(
        1 / 1000 * prices.s3_transition_glacier_ir_per_1000
    )
    assert line(est.per_study, "S3 packing of the cold study") == pytest.approx(
        n / 1000 * prices.s3_get_per_1000
        + 1 / 1000 * prices.s3_put_per_1000
        + n * 0.1 * PACK_LAMBDA_GB * prices.lambda_gb_second
    )


def test_straight_to_deep_archive_makes_every_cold_retrieval_a_restore() -> None:
    # Given Deep Archive from day 90 with no Glacier IR period and 2 retrievals, 30 % while hot
    est = estimate_ours(
        workload(retention_years=12.0, retrievals_per_study=2),
        Prices(),
        Assumptions(deep_archive_days=90.0, retrievals_while_hot=0.3),
    )
    # Then the other 1.4 retrievals restore the study from Deep Archive
    notes = {entry.item: entry.note for entry in est.per_study}
    assert notes["S3 Deep Archive restores (Bulk)"].startswith("1.40 retrievals")
    assert notes["S3 GET + retrieval fee (C-MOVE/C-GET)"].startswith("0.00 of 2")


def test_design_options_get_cheaper_step_by_step_and_name_their_service_level() -> None:
    # Given the national workload and the design options of bench/results/cost.md
    w = Workload(studies_per_day=3000, study_mb=150, retention_years=12, retrievals_per_study=2)
    options = design_options()
    costs = [estimate_ours(w, Prices(), o.assumptions).per_study_total for o in options]

    # Then exactly one is what this branch builds, and each Deep Archive step is cheaper than the last
    assert [o.status for o in options].count("built") == 1
    deep_steps = [
        c for o, c in zip(options, costs, strict=True) if "Deep Archive" in o.access or "restore" in o.access
    ]
    assert deep_steps == sorted(deep_steps, reverse=True)
    # And HealthImaging is billed on its measured compressed size in every option
    assert {o.assumptions.ahi_size_ratio for o in options} == {AHI_MEASURED_SIZE_RATIO}
    assert "restore" in options[1].access and "instant" in options[-1].access
    assert "| ratio |" in render_options(w, Prices())
