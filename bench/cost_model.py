"""What a workload costs on the deployed architecture, beside AWS HealthImaging for the same workload.

    python -m bench.cost_model --studies-per-day 3000 --study-mb 150 --retention-years 12 \\
        --retrievals-per-study 2

The model prices one study over its whole life (ingest, storage through the lifecycle for the
retention time, retrievals) and, for a steady flow of studies, the monthly bill once the archive
holds ``retention-years`` of data (then the monthly bill = studies per month x lifetime cost per
study, plus the fixed monthly costs). Every price and assumption is printed with the result;
override any price with ``--price NAME=VALUE``.

Prices: USD, public list prices as known for eu-north-1 (Stockholm) in 2025; values marked "~" are
the us-east-1 list price used where the Stockholm price was not known to the author (they differ by
a few per cent at most). AWS HealthImaging prices are the published us-east-1 examples (the service
is not offered in eu-north-1): storage $0.105/GB-month Frequent Access, $0.006/GB-month Archive
Instant Access (after 30 days without access), $0.005 per 1,000 API calls, imports free, each
image set billed at 5 MB minimum. Check both against the current price pages before quoting.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace

GB = 1024**3  # S3, DynamoDB and HealthImaging bill binary gigabytes
HOURS_PER_MONTH = 730.0
PACK_LAMBDA_GB = 1.769  # the Lambda size with one full vCPU
DAYS_PER_MONTH = 365.0 / 12


@dataclass(frozen=True)
class Prices:
    """Unit prices in USD. Names are the CLI's ``--price`` keys."""

    # S3 storage, per GB-month
    s3_standard_gb_month: float = 0.023
    s3_glacier_ir_gb_month: float = 0.004  # ~
    # S3 requests, per 1,000
    s3_put_per_1000: float = 0.005
    s3_get_per_1000: float = 0.0004
    s3_glacier_ir_get_per_1000: float = 0.01  # ~
    s3_transition_glacier_ir_per_1000: float = 0.02  # ~ lifecycle transition request
    # S3 Glacier Deep Archive (us-east-1 list prices): storage, transition, restore (Bulk/Standard)
    s3_deep_archive_gb_month: float = 0.00099  # ~
    s3_transition_deep_archive_per_1000: float = 0.05  # ~
    s3_restore_bulk_per_1000: float = 0.025  # ~
    s3_restore_bulk_gb: float = 0.0025  # ~
    s3_restore_standard_per_1000: float = 0.10  # ~
    s3_restore_standard_gb: float = 0.02  # ~
    # S3 Glacier Instant Retrieval data retrieval, per GB
    s3_glacier_ir_retrieval_gb: float = 0.03  # ~
    # DynamoDB on-demand
    dynamodb_wru_per_million: float = 0.625  # ~ (after the November 2024 price cut)
    dynamodb_rru_per_million: float = 0.125  # ~
    dynamodb_gb_month: float = 0.25  # ~
    # DynamoDB Standard-Infrequent-Access table class: storage 0.10, requests 25 % dearer (the
    # ratio of the published on-demand prices before the 2024 cut; unchecked after it)
    dynamodb_ia_gb_month: float = 0.10  # ~
    dynamodb_ia_wru_per_million: float = 0.78125  # ~ unchecked
    dynamodb_ia_rru_per_million: float = 0.15625  # ~ unchecked
    # Lambda (x86), per GB-second and per million requests
    lambda_gb_second: float = 0.0000166667
    lambda_per_million_requests: float = 0.20
    # SQS standard queue, per million requests
    sqs_per_million: float = 0.40
    # Fargate (Linux/x86), per hour
    fargate_vcpu_hour: float = 0.04048  # ~
    fargate_gb_hour: float = 0.004445  # ~
    # Network Load Balancer
    nlb_hour: float = 0.0225  # ~
    nlb_lcu_hour: float = 0.006  # ~ one LCU = 1 GB processed in the hour for TCP
    # Data transfer out to the internet (first 10 TB/month tier), per GB; paid by both options
    egress_gb: float = 0.09
    # AWS HealthImaging (us-east-1 published examples)
    ahi_frequent_gb_month: float = 0.105
    ahi_archive_gb_month: float = 0.006
    ahi_api_per_1000: float = 0.005


@dataclass(frozen=True)
class Workload:
    studies_per_day: float
    study_mb: float  # average study size, decimal MB as modalities report it
    retention_years: float
    retrievals_per_study: float  # over the study's whole retention time
    instance_kb: float = 512.0  # average instance size (a CT slice is ~513 KB)


@dataclass(frozen=True)
class Assumptions:
    """How the deployed architecture uses AWS per unit of work (see docs/benchmarks.md)."""

    # S3 lifecycle (the CDK default): Standard for this many days, then Glacier Instant Retrieval,
    # then Deep Archive from ``deep_archive_days`` (0: never) until the end.
    standard_days: float = 90.0
    deep_archive_days: float = 730.0
    # Share of retrievals that happen after the study went to Deep Archive (a restore each).
    retrievals_while_deep: float = 0.2
    restore_tier: str = "Bulk"
    # Deep Archive bills each object 40 KB more: 8 KB at the Standard rate, 32 KB at its own.
    deep_archive_standard_overhead_kb: float = 8.0
    deep_archive_overhead_kb: float = 32.0
    # Objects a cold study is kept in (0: one per instance, as stored; k: packed into k objects
    # written when the Standard period ends, the per-instance objects locked only that long); a
    # packed study is in Glacier IR and Deep Archive only as its packs.
    cold_objects_per_study: float = 0.0
    # Stored size of the packs relative to the received bytes (lossless compression whose
    # decompression gives the exact stored bytes; 1.0: none). Applies only to packed studies.
    cold_size_ratio: float = 1.0
    # Lambda seconds (at 1,769 MB, one vCPU) per instance to compress it into the pack and check
    # that it decompresses to the stored bytes (python -m bench.compression prints the figure).
    pack_seconds_per_instance: float = 0.0
    # S3 lifecycle does not transition objects under 128 KiB by default (since 2024): they stay in
    # Standard for life.
    min_transition_bytes: int = 128 * 1024
    # Share of retrievals that happen while a study is still in Standard (priors for a new study).
    retrievals_while_hot: float = 0.3
    # DynamoDB per instance stored: the index transaction writes Instance, Series, Study and
    # Patient (4 items < 1 KB, x2 for a transaction); the listener reads the patient (0.5 RRU) and
    # storage commitment reads the instance (1 RRU, consistent) and HEADs the object.
    wru_per_instance: float = 8.0
    rru_per_instance: float = 1.5
    wru_per_study: float = 4.0  # study claim + commitment transaction item writes
    rru_per_instance_retrieved: float = 0.25  # by_study query, ~1 KB items, 4 KB per RRU (eventual)
    # Instance item + its by_study GSI copy, each + 100 bytes: measured 2,080 (CT) and 1,970 (MR)
    # with 64-character UIDs on items the index function wrote (python -m bench.index_size).
    index_bytes_per_instance: float = 2100.0
    # The instance table's class (the CDK default: Standard-Infrequent-Access) and its share of the
    # requests above: the Instance item (< 1 KB: 2 WRU in the transaction) and its GSI copy (1 WRU);
    # commitment's consistent read (1 RRU); every retrieval's by_study query.
    instance_table_infrequent_access: bool = True
    instance_table_wru_per_instance: float = 3.0
    instance_table_rru_per_instance: float = 1.0
    # Bytes per instance left in DynamoDB once the study is in Deep Archive (None: all of them);
    # moving the instance rows into the pack's offset table leaves a study-level row (proposal).
    cold_index_bytes_per_instance: float | None = None
    # Lambda: the index function, batch of 10 S3 events, 512 MB, ms of duration per instance.
    lambda_memory_gb: float = 0.5
    lambda_ms_per_instance: float = 60.0
    lambda_batch: int = 10
    # SQS requests per instance: the S3 event, its share of a receive and a delete batch.
    sqs_requests_per_instance: float = 1.2
    sqs_idle_requests_per_month: float = 650_000.0  # long polls of the event source mapping
    # Fargate DICOM listener: always at least this many tasks (one per AZ), this size.
    listener_min_tasks: int = 2
    listener_task_vcpu: float = 1.0
    listener_task_gb: float = 2.0
    # CPU-seconds a listener spends per 1,000 instances stored: ~20 in the committed `make bench`
    # report (CT images, botocore talking HTTP to moto; TLS to real S3 adds some).
    listener_cpu_s_per_1000: float = 20.0
    # Daily volume arrives within this many hours, with this peak-to-average factor; tasks run at
    # this CPU utilisation at peak.
    working_hours: float = 10.0
    peak_factor: float = 2.0
    target_utilisation: float = 0.6
    # AWS HealthImaging: stored size relative to ours (HTJ2K lossless can make it smaller: < 1).
    ahi_size_ratio: float = 1.0  # bench/results/cost.md uses the measured J2K lossless ratio
    ahi_min_image_set_mb: float = 5.0
    ahi_api_calls_per_instance_stored: float = 0.0  # imports are free
    ahi_api_calls_per_instance_retrieved: float = 1.0  # one GetImageFrame / WADO-RS per instance


@dataclass
class CostLine:
    item: str
    usd: float
    note: str = ""


@dataclass
class Estimate:
    """Lifetime cost of one study, and the monthly bill at steady state."""

    per_study: list[CostLine] = field(default_factory=list)
    monthly_fixed: list[CostLine] = field(default_factory=list)
    studies_per_month: float = 0.0

    @property
    def per_study_total(self) -> float:
        return sum(line.usd for line in self.per_study)

    @property
    def monthly_fixed_total(self) -> float:
        return sum(line.usd for line in self.monthly_fixed)

    @property
    def monthly_steady_state(self) -> float:
        return self.studies_per_month * self.per_study_total + self.monthly_fixed_total


def instances_per_study(workload: Workload) -> float:
    return max(1.0, workload.study_mb * 1000.0 / workload.instance_kb)


def study_gb(workload: Workload) -> float:
    """Study size in binary GB (what storage is billed in)."""
    return workload.study_mb * 1e6 / GB


def retention_months(workload: Workload) -> float:
    return workload.retention_years * 12.0


def listener_tasks(workload: Workload, a: Assumptions) -> int:
    """Listener tasks needed for the peak ingest rate, never fewer than the minimum."""
    instances_per_day = workload.studies_per_day * instances_per_study(workload)
    peak_per_second = instances_per_day / (a.working_hours * 3600.0) * a.peak_factor
    vcpu_needed = peak_per_second * a.listener_cpu_s_per_1000 / 1000.0
    by_cpu = math.ceil(vcpu_needed / (a.listener_task_vcpu * a.target_utilisation))
    return max(a.listener_min_tasks, by_cpu)


def estimate_ours(workload: Workload, p: Prices, a: Assumptions) -> Estimate:
    n = instances_per_study(workload)
    gb = study_gb(workload)
    months = retention_months(workload)
    transitions = workload.instance_kb * 1000 >= a.min_transition_bytes
    standard_months = min(months, a.standard_days / DAYS_PER_MONTH) if transitions else months
    deep_from = a.deep_archive_days / DAYS_PER_MONTH if a.deep_archive_days else months
    deep_months = max(0.0, months - max(deep_from, standard_months)) if transitions else 0.0
    ir_months = months - standard_months - deep_months
    packed = bool(a.cold_objects_per_study) and transitions and (ir_months > 0 or deep_months > 0)
    cold_objects = a.cold_objects_per_study if packed else n
    cold_gb = gb * a.cold_size_ratio if packed else gb
    retrieved_gb = gb * workload.retrievals_per_study
    deep_retrievals = workload.retrievals_per_study * a.retrievals_while_deep if deep_months else 0.0
    if deep_months and not ir_months:
        # Straight from Standard to Deep Archive: every retrieval after the hot period is a restore.
        deep_retrievals = workload.retrievals_per_study * (1 - a.retrievals_while_hot)
    ir_retrievals = (
        workload.retrievals_per_study * (1 - a.retrievals_while_hot) - deep_retrievals if transitions else 0.0
    )
    hot_retrievals = workload.retrievals_per_study - ir_retrievals - deep_retrievals
    est = Estimate(studies_per_month=workload.studies_per_day * DAYS_PER_MONTH)
    add = est.per_study.append
    add(
        CostLine(
            "S3 Standard storage",
            gb * standard_months * p.s3_standard_gb_month,
            f"{standard_months:.1f} months",
        )
    )
    add(
        CostLine(
            "S3 Glacier IR storage",
            cold_gb * ir_months * p.s3_glacier_ir_gb_month,
            f"{ir_months:.1f} months" + (f", packed, {a.cold_size_ratio:g} of the bytes" if packed else ""),
        )
    )
    overhead_gb = cold_objects * 1000 / GB
    add(
        CostLine(
            "S3 Deep Archive storage (+40 KB per object)",
            deep_months
            * (
                cold_gb * p.s3_deep_archive_gb_month
                + overhead_gb * a.deep_archive_overhead_kb * p.s3_deep_archive_gb_month
                + overhead_gb * a.deep_archive_standard_overhead_kb * p.s3_standard_gb_month
            ),
            f"{deep_months:.1f} months, {cold_objects:.0f} objects",
        )
    )
    add(CostLine("S3 PUT (C-STORE)", n / 1000 * p.s3_put_per_1000))
    packing = 0.0
    if packed:
        # Reading the study's objects once while in Standard, compressing and checking them in
        # Lambda, writing the packed objects.
        packing = (
            n / 1000 * p.s3_get_per_1000
            + cold_objects / 1000 * p.s3_put_per_1000
            + n * a.pack_seconds_per_instance * PACK_LAMBDA_GB * p.lambda_gb_second
        )
    add(CostLine("S3 packing of the cold study", packing, "" if packing else "not packed"))
    add(
        CostLine(
            "S3 lifecycle transitions",
            (
                (cold_objects / 1000 * p.s3_transition_glacier_ir_per_1000 if ir_months else 0.0)
                + (cold_objects / 1000 * p.s3_transition_deep_archive_per_1000 if deep_months else 0.0)
            )
            if transitions
            else 0.0,
            "" if transitions else "objects under 128 KiB stay in Standard",
        )
    )
    # Indexing reads the header with ranged GETs; commitment HEADs each object once.
    add(CostLine("S3 GET/HEAD (index, commitment)", 2 * n / 1000 * p.s3_get_per_1000))
    restore_requests, restore_gb = (
        (p.s3_restore_bulk_per_1000, p.s3_restore_bulk_gb)
        if a.restore_tier == "Bulk"
        else (p.s3_restore_standard_per_1000, p.s3_restore_standard_gb)
    )
    add(
        CostLine(
            "S3 GET + retrieval fee (C-MOVE/C-GET)",
            hot_retrievals * n / 1000 * p.s3_get_per_1000
            + ir_retrievals
            * (cold_objects / 1000 * p.s3_glacier_ir_get_per_1000 + cold_gb * p.s3_glacier_ir_retrieval_gb),
            f"{ir_retrievals:.2f} of {workload.retrievals_per_study:g} retrievals from Glacier IR",
        )
    )
    add(
        CostLine(
            f"S3 Deep Archive restores ({a.restore_tier})",
            deep_retrievals
            * (cold_objects / 1000 * (restore_requests + p.s3_get_per_1000) + cold_gb * restore_gb),
            f"{deep_retrievals:.2f} retrievals restore the study",
        )
    )
    wru = n * a.wru_per_instance + a.wru_per_study
    rru = n * a.rru_per_instance + workload.retrievals_per_study * n * a.rru_per_instance_retrieved
    ia = a.instance_table_infrequent_access
    ia_wru = n * a.instance_table_wru_per_instance if ia else 0.0
    ia_rru = (
        n * (a.instance_table_rru_per_instance + workload.retrievals_per_study * a.rru_per_instance_retrieved)
        if ia
        else 0.0
    )
    add(
        CostLine(
            "DynamoDB writes",
            (wru - ia_wru) / 1e6 * p.dynamodb_wru_per_million + ia_wru / 1e6 * p.dynamodb_ia_wru_per_million,
            f"{wru:.0f} WRU" + (f", {ia_wru:.0f} of them Infrequent Access" if ia else ""),
        )
    )
    add(
        CostLine(
            "DynamoDB reads",
            (rru - ia_rru) / 1e6 * p.dynamodb_rru_per_million + ia_rru / 1e6 * p.dynamodb_ia_rru_per_million,
            f"{rru:.0f} RRU" + (f", {ia_rru:.0f} of them Infrequent Access" if ia else ""),
        )
    )
    index_gb = n * a.index_bytes_per_instance / GB
    cold_index_gb = (
        n * a.cold_index_bytes_per_instance / GB if a.cold_index_bytes_per_instance is not None else index_gb
    )
    index_gb_months = index_gb * (months - deep_months) + cold_index_gb * deep_months
    add(
        CostLine(
            "DynamoDB storage",
            index_gb_months * (p.dynamodb_ia_gb_month if ia else p.dynamodb_gb_month),
            f"{index_gb * 1e6:.0f} KB"
            + (f", {cold_index_gb * 1e6:.0f} KB when cold" if cold_index_gb != index_gb else "")
            + (", Infrequent Access class" if ia else ""),
        )
    )
    gb_seconds = n * a.lambda_ms_per_instance / 1000 * a.lambda_memory_gb
    invocations = n / a.lambda_batch
    add(
        CostLine(
            "Lambda (index)",
            gb_seconds * p.lambda_gb_second + invocations / 1e6 * p.lambda_per_million_requests,
            f"{gb_seconds:.1f} GB-s",
        )
    )
    add(CostLine("SQS", n * a.sqs_requests_per_instance / 1e6 * p.sqs_per_million))
    add(CostLine("NLB data processed", (gb + retrieved_gb) * p.nlb_lcu_hour, "1 LCU-hour per GB"))
    add(CostLine("Data transfer out (retrievals)", retrieved_gb * p.egress_gb, "same for both options"))

    tasks = listener_tasks(workload, a)
    task_hour = a.listener_task_vcpu * p.fargate_vcpu_hour + a.listener_task_gb * p.fargate_gb_hour
    est.monthly_fixed.append(
        CostLine(
            "Fargate DICOM listener",
            tasks * task_hour * HOURS_PER_MONTH,
            f"{tasks} x {a.listener_task_vcpu:g} vCPU / {a.listener_task_gb:g} GB, always on",
        )
    )
    est.monthly_fixed.append(CostLine("NLB hours", p.nlb_hour * HOURS_PER_MONTH))
    est.monthly_fixed.append(
        CostLine("SQS idle polling", a.sqs_idle_requests_per_month / 1e6 * p.sqs_per_million)
    )
    return est


def estimate_healthimaging(workload: Workload, p: Prices, a: Assumptions) -> Estimate:
    """The same workload on AWS HealthImaging: one image set per study, intelligent tiering.

    A study is in Frequent Access for its first 30 days and for 30 days after each retrieval that
    happens while it is archived; otherwise in Archive Instant Access. Structured metadata storage
    is billed by HealthImaging too but has no published example price; it is left out (in its favour).
    """
    n = instances_per_study(workload)
    billed_gb = max(study_gb(workload) * a.ahi_size_ratio, a.ahi_min_image_set_mb * 1e6 / GB)
    months = retention_months(workload)
    frequent_months = min(months, 1.0 + workload.retrievals_per_study * (1 - a.retrievals_while_hot))
    archive_months = months - frequent_months
    retrieved_gb = study_gb(workload) * workload.retrievals_per_study
    est = Estimate(studies_per_month=workload.studies_per_day * DAYS_PER_MONTH)
    add = est.per_study.append
    add(
        CostLine(
            "Frequent Access storage",
            billed_gb * frequent_months * p.ahi_frequent_gb_month,
            f"{frequent_months:.1f} months",
        )
    )
    add(
        CostLine(
            "Archive Instant Access storage",
            billed_gb * archive_months * p.ahi_archive_gb_month,
            f"{archive_months:.1f} months",
        )
    )
    calls = n * (
        a.ahi_api_calls_per_instance_stored
        + workload.retrievals_per_study * a.ahi_api_calls_per_instance_retrieved
    )
    add(CostLine("API calls", calls / 1000 * p.ahi_api_per_1000, f"{calls:.0f} calls"))
    add(CostLine("Data transfer out (retrievals)", retrieved_gb * p.egress_gb, "same for both options"))
    return est


def parse_prices(overrides: Sequence[str], base: Prices | None = None) -> Prices:
    """Apply ``NAME=VALUE`` overrides to the default prices; unknown names are an error."""
    prices = base or Prices()
    known = {f.name for f in fields(Prices)}
    changes: dict[str, float] = {}
    for override in overrides:
        name, sep, value = override.partition("=")
        if not sep or name not in known:
            raise ValueError(f"unknown price {name!r}; known: {', '.join(sorted(known))}")
        changes[name] = float(value)
    return replace(prices, **changes)


# Measured (bench/results/cost.md): pydicom-data's full-size real CT and MR, original bytes over
# J2K lossless bytes. HealthImaging-like: the pixel data at Bits Stored, as a transcoding service
# bills it; ours: the 16-bit words and an lzma'd header, decoded back to the exact file.
AHI_MEASURED_SIZE_RATIO = 1 / 4.51
J2K_EXACT_SIZE_RATIO = 1 / 4.72
# CPU seconds per 512 KB instance to J2K-encode, decode and compare: 0.08 measured on this
# machine's x86 core; doubled for a Lambda vCPU and the pack's other work.
PACK_SECONDS_PER_INSTANCE = 0.15
# A packed cold study keeps a study row and its series rows in DynamoDB; the instance rows live in
# the pack's offset table (and a copy of it in a small Standard object for C-FIND): ~25 bytes per
# instance amortised.
COLD_INDEX_BYTES_PER_INSTANCE = 25.0


@dataclass(frozen=True)
class DesignOption:
    label: str
    status: str  # "built" (the CDK defaults of this branch) or "proposed" / "before"
    access: str  # the service level a retrieval of a cold study gets
    assumptions: Assumptions


def design_options(base: Assumptions | None = None) -> list[DesignOption]:
    """The designs compared in bench/results/cost.md, each a set of assumptions over ``base``."""
    a = replace(base or Assumptions(), ahi_size_ratio=AHI_MEASURED_SIZE_RATIO)
    before = replace(a, instance_table_infrequent_access=False)
    pack = replace(a, cold_objects_per_study=1.0)
    compress = replace(
        pack, cold_size_ratio=J2K_EXACT_SIZE_RATIO, pack_seconds_per_instance=PACK_SECONDS_PER_INSTANCE
    )
    deep = "restore 12 h (Standard) / 48 h (Bulk) after 2 years; instant before"
    deep_90 = "restore 12 h (Standard) / 48 h (Bulk) after 90 days; instant before"
    return [
        DesignOption(
            "Standard table class for the instance index (before this work)", "before", deep, before
        ),
        DesignOption("CDK defaults: instance index in Standard-IA", "built", deep, a),
        DesignOption("+ cold study packed into 1 object at 90 days", "proposed", deep, pack),
        DesignOption(
            "+ pack compressed byte-exactly (J2K of the 16-bit words)",
            "proposed",
            deep,
            compress,
        ),
        DesignOption(
            "+ Deep Archive from day 90 (no Glacier IR period)",
            "proposed",
            deep_90,
            replace(compress, deep_archive_days=90.0),
        ),
        DesignOption(
            "+ instance rows out of DynamoDB once packed",
            "proposed",
            deep_90,
            replace(
                compress,
                deep_archive_days=90.0,
                cold_index_bytes_per_instance=COLD_INDEX_BYTES_PER_INSTANCE,
            ),
        ),
        DesignOption(
            "+ packed at 30 days, straight into Deep Archive",
            "proposed",
            "restore 12 h (Standard) / 48 h (Bulk) after 30 days; instant before",
            replace(
                compress,
                standard_days=30.0,
                deep_archive_days=30.0,
                cold_index_bytes_per_instance=COLD_INDEX_BYTES_PER_INSTANCE,
            ),
        ),
        DesignOption(
            "instant access for life: packed, compressed, Glacier IR (no Deep Archive)",
            "proposed",
            "instant (milliseconds), as HealthImaging",
            replace(compress, deep_archive_days=0.0),
        ),
    ]


def render_options(workload: Workload, prices: Prices, base: Assumptions | None = None) -> str:
    """The design options side by side: lifetime cost per study against HealthImaging's."""
    lines = [
        "| design | status | per study, whole life (USD) | HealthImaging (USD) | ratio | access to a cold study |",
        "|---|---|---:|---:|---:|---|",
    ]
    for option in design_options(base):
        ours = estimate_ours(workload, prices, option.assumptions).per_study_total
        ahi = estimate_healthimaging(workload, prices, option.assumptions).per_study_total
        lines.append(
            f"| {option.label} | {option.status} | {ours:.4f} | {ahi:.4f} | {_ratio(ours, ahi)} | {option.access} |"
        )
    return "\n".join(lines) + "\n"


def render(workload: Workload, prices: Prices, assumptions: Assumptions) -> str:
    """The estimate as markdown: both options side by side, then every price and assumption."""
    ours = estimate_ours(workload, prices, assumptions)
    ahi = estimate_healthimaging(workload, prices, assumptions)
    lines = [
        "## Cost model",
        "",
        f"Workload: {workload.studies_per_day:g} studies/day of {workload.study_mb:g} MB "
        f"({instances_per_study(workload):.0f} instances of {workload.instance_kb:g} KB), kept "
        f"{workload.retention_years:g} years, retrieved {workload.retrievals_per_study:g} times each.",
        "",
        "| | this archive | AWS HealthImaging | ratio |",
        "|---|---:|---:|---:|",
        f"| per study, whole life (USD) | {ours.per_study_total:.4f} | {ahi.per_study_total:.4f} | "
        f"{_ratio(ours.per_study_total, ahi.per_study_total)} |",
        f"| fixed per month (USD) | {ours.monthly_fixed_total:,.0f} | {ahi.monthly_fixed_total:,.0f} | |",
        f"| per month at steady state (USD) | {ours.monthly_steady_state:,.0f} | "
        f"{ahi.monthly_steady_state:,.0f} | {_ratio(ours.monthly_steady_state, ahi.monthly_steady_state)} |",
        "",
        "Steady state: the archive holds the whole retention window; the monthly bill is then the "
        "studies per month times the lifetime cost of one study, plus the fixed costs.",
        "",
        "| this archive, per study | USD | note |",
        "|---|---:|---|",
        *[f"| {line.item} | {line.usd:.5f} | {line.note} |" for line in ours.per_study],
        *[f"| {line.item} (per month) | {line.usd:,.2f} | {line.note} |" for line in ours.monthly_fixed],
        "",
        "| AWS HealthImaging, per study | USD | note |",
        "|---|---:|---|",
        *[f"| {line.item} | {line.usd:.5f} | {line.note} |" for line in ahi.per_study],
        "",
        "Prices (USD; `~` in bench/cost_model.py marks a us-east-1 list price used for eu-north-1):",
        "",
        "| price | value |",
        "|---|---:|",
        *[f"| {name} | {value:g} |" for name, value in asdict(prices).items()],
        "",
        "Assumptions:",
        "",
        "| assumption | value |",
        "|---|---:|",
        *[
            f"| {name} | {value if isinstance(value, (str, bool)) or value is None else format(value, 'g')} |"
            for name, value in asdict(assumptions).items()
        ],
    ]
    return "\n".join(lines) + "\n"


def _ratio(ours: float, theirs: float) -> str:
    return f"{ours / theirs:.2f}" if theirs else "n/a"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--studies-per-day", type=float, default=3000.0)
    parser.add_argument("--study-mb", type=float, default=150.0, help="average study size (MB)")
    parser.add_argument("--retention-years", type=float, default=12.0)
    parser.add_argument("--retrievals-per-study", type=float, default=2.0)
    parser.add_argument("--instance-kb", type=float, default=512.0, help="average instance size (KB)")
    parser.add_argument(
        "--listener-cpu-s-per-1000",
        type=float,
        default=Assumptions.listener_cpu_s_per_1000,
        help="listener CPU-seconds per 1,000 instances (from `make bench`)",
    )
    parser.add_argument("--deep-archive-days", type=float, default=Assumptions.deep_archive_days)
    parser.add_argument("--restore-tier", choices=("Bulk", "Standard"), default=Assumptions.restore_tier)
    parser.add_argument(
        "--cold-objects-per-study",
        type=float,
        default=0.0,
        help="pack a cold study into this many objects (0: one object per instance)",
    )
    parser.add_argument(
        "--cold-size-ratio", type=float, default=1.0, help="cold bytes / stored bytes (lossless compression)"
    )
    parser.add_argument(
        "--ahi-size-ratio",
        type=float,
        default=AHI_MEASURED_SIZE_RATIO,
        help="HealthImaging's billed bytes / our bytes (default: measured J2K lossless on real CT/MR)",
    )
    parser.add_argument("--price", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument(
        "--options",
        action="store_true",
        help="first the design options of bench/results/cost.md side by side",
    )
    args = parser.parse_args(argv)
    workload = Workload(
        studies_per_day=args.studies_per_day,
        study_mb=args.study_mb,
        retention_years=args.retention_years,
        retrievals_per_study=args.retrievals_per_study,
        instance_kb=args.instance_kb,
    )
    assumptions = Assumptions(
        listener_cpu_s_per_1000=args.listener_cpu_s_per_1000,
        deep_archive_days=args.deep_archive_days,
        restore_tier=args.restore_tier,
        cold_objects_per_study=args.cold_objects_per_study,
        cold_size_ratio=args.cold_size_ratio,
        ahi_size_ratio=args.ahi_size_ratio,
    )
    prices = parse_prices(args.price)
    if args.options:
        print(render_options(workload, prices))
    print(render(workload, prices, assumptions))


if __name__ == "__main__":
    main()
