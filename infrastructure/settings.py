"""Names and defaults of a deployment, in one place.

Operators choose a handful of things per stack through CDK context (``-c key=value`` or cdk.json);
everything else is a constant here. ``DeploymentSettings.from_context`` reads the context once and
validates it, so a wrong combination (a production stack with GOVERNANCE retention) fails at synth,
before anything is deployed.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from archive.topology import (
    ADMIN_API,
    DESTROY_EXPIRED,
    DISCLOSURE_ANCHOR,
    DISCLOSURE_NOTIFICATION,
    INDEX_INSTANCE,
    INDEX_QUEUE,
    LOCK_INSTANCE,
    LOCK_QUEUE,
    PATIENT_UPDATE,
    PATIENT_UPDATE_QUEUE,
    REGISTER_STUDY,
    REGISTRATION_QUEUE,
    SEND_IAN,
    TABLE_ENV,
)
from aws_cdk import Duration
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from constructs import Node

REPO_ROOT = Path(__file__).resolve().parent.parent
# Used when the CLI has no region from the operator's profile (offline synth). Load balancer
# access logs need a concrete region at synth time.
DEFAULT_REGION = "eu-north-1"

# Environment variable names, queues and their consumers come from archive.topology (one
# declaration, also read by the local cloud and the code); only their AWS sizing is decided here.
# A listener port set to this is switched off (TLS-only listeners; listeners/*/__main__.py).
PORT_OFF = "off"
ARCHIVE_AE_TITLE = "ARCHIVE"
POWERTOOLS_METRICS_NAMESPACE = "ImagingArchive"
# Powertools service name of the DICOM listener: the ``service`` dimension of its metrics.
DICOM_LISTENER_SERVICE = "dicom-listener"

# --- source folders (relative to the repository root) --------------------------------------------
CORE_LAYER_DIR = REPO_ROOT / "layers" / "core"
DEPS_REQUIREMENTS_DIR = REPO_ROOT / "layers" / "deps"
INDEX_FUNCTION_DIR = REPO_ROOT / INDEX_INSTANCE.code_dir
DESTROY_FUNCTION_DIR = REPO_ROOT / DESTROY_EXPIRED.code_dir
INDEX_FUNCTION_HANDLER = INDEX_INSTANCE.handler
DICOM_DOCKERFILE = "listeners/dicom/Dockerfile"
PATIENT_UPDATE_FUNCTION_DIR = REPO_ROOT / PATIENT_UPDATE.code_dir
PATIENT_UPDATE_FUNCTION_HANDLER = PATIENT_UPDATE.handler
HL7_DOCKERFILE = "listeners/hl7/Dockerfile"
NOTIFICATION_FUNCTION_DIR = REPO_ROOT / DISCLOSURE_NOTIFICATION.code_dir
ADMIN_API_FUNCTION_DIR = REPO_ROOT / ADMIN_API.code_dir
ANCHOR_FUNCTION_DIR = REPO_ROOT / DISCLOSURE_ANCHOR.code_dir
REGISTER_FUNCTION_DIR = REPO_ROOT / REGISTER_STUDY.code_dir
REGISTER_FUNCTION_HANDLER = REGISTER_STUDY.handler
IAN_FUNCTION_DIR = REPO_ROOT / SEND_IAN.code_dir
IAN_FUNCTION_HANDLER = SEND_IAN.handler
# What a listener image never needs; keeping it out of the build context also keeps the image's
# asset hash stable when only tests or docs change.
CONTAINER_CONTEXT_EXCLUDES = (
    ".git",
    ".venv",
    "node_modules",
    "cdk.out",
    "tests",
    "bench",
    "docs",
    "functions",
    "layers/deps",
    ".local-cloud",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    "**/__pycache__",
)
ASSET_EXCLUDES = ("**/__pycache__", "**/*.pyc")

# --- runtimes and sizing ---------------------------------------------------------------------------
LAMBDA_RUNTIME = lambda_.Runtime.PYTHON_3_11
# Graviton: cheaper per GB-second; the deps layer is built from aarch64 wheels to match.
LAMBDA_ARCHITECTURE = lambda_.Architecture.ARM_64
LOG_RETENTION = logs.RetentionDays.THREE_MONTHS
# Storage tiers of instance objects by age (docs/storage.md, "Tiers and restores"): the default
# of a deployment, changed per stack with -c instanceTiers=GLACIER_IR:90,DEEP_ARCHIVE:730 (days
# after the object was stored; DeploymentSettings.instance_tiers holds the default). Classes that need a restore (GLACIER, DEEP_ARCHIVE) make their
# instances NEARLINE; a retrieval restores the study (RESTORE_TIER, kept RESTORE_DAYS days).
TIER_CLASSES = {
    "STANDARD_IA": s3.StorageClass.INFREQUENT_ACCESS,
    "GLACIER_IR": s3.StorageClass.GLACIER_INSTANT_RETRIEVAL,
    "GLACIER": s3.StorageClass.GLACIER,
    "DEEP_ARCHIVE": s3.StorageClass.DEEP_ARCHIVE,
}
# S3 lifecycle rules: STANDARD_IA no earlier than 30 days after creation.
TIER_MINIMUM_DAYS = {"STANDARD_IA": 30}
RESTORE_TIER_DEFAULT = "Bulk"
RESTORE_DAYS_DEFAULT = 7
# DynamoDB tables in the Standard-Infrequent-Access table class by default (docs/storage.md,
# "Index storage"): storage 0.10 instead of 0.25 USD/GB-month, reads and writes about 25 % dearer.
# Worth it where storage outweighs throughput: the instance index (one item and its by_study copy
# per stored instance, kept for the whole retention time, written once) and the access log (one
# item per access, read only to answer a disclosure request). Changed per stack with
# -c infrequentAccessTables=instances,series (or "none").
INFREQUENT_ACCESS_TABLES_DEFAULT = ("instances", "access_log")
STORAGE_EVENTS_FUNCTION_TIMEOUT = Duration.seconds(60)
RESTORE_FUNCTION_TIMEOUT = Duration.minutes(15)  # a large study: one RestoreObject per instance
TIER_FUNCTION_MEMORY_MB = 256
# A retention job page: at most services.retention.JOB_PAGE_OBJECTS HEAD + PutObjectRetention calls.
RETENTION_JOB_FUNCTION_TIMEOUT = Duration.minutes(5)
INDEX_FUNCTION_TIMEOUT = Duration.seconds(60)
# The staging tier (docs/storage.md, "Two tiers"): an S3 Express One Zone directory bucket in this
# Availability Zone (a zone ID, the same physical zone in every account) of DEFAULT_REGION, where
# the listener tasks run; a staged copy left after this many days is expired (the copier has
# given up long before: its messages reach the DLQ, alarmed, within hours).
STAGING_ZONE_ID = "eun1-az1"
STAGING_EXPIRE_DAYS = 30
# Copying a staged object into the locked bucket: up to MAX_OBJECT_BYTES (4 GiB) through /tmp.
LOCK_FUNCTION_DIR = REPO_ROOT / LOCK_INSTANCE.code_dir
LOCK_FUNCTION_HANDLER = LOCK_INSTANCE.handler
LOCK_FUNCTION_TIMEOUT = Duration.minutes(5)
LOCK_FUNCTION_MEMORY_MB = 1024
LOCK_FUNCTION_EPHEMERAL_GIB = 5
LOCK_BATCH_SIZE = LOCK_INSTANCE.batch_size
LOCK_MAX_RECEIVE_COUNT = LOCK_QUEUE.max_receive_count
INDEX_FUNCTION_MEMORY_MB = 512
INDEX_BATCH_SIZE = INDEX_INSTANCE.batch_size
INDEX_MAX_RECEIVE_COUNT = INDEX_QUEUE.max_receive_count
DLQ_RETENTION = Duration.days(14)
DICOM_CONTAINER_PORT = 11112
COMMITMENT_WAIT_SECONDS = 60
LISTENER_SPOOL_DIR = "/tmp"
NAT_GATEWAYS = 2
# HL7 patient administration: MLLP listener -> FIFO queue -> patient_update Lambda.
HL7_CONTAINER_PORT = 2575
HL7_MAX_MESSAGE_BYTES = 1024 * 1024
HL7_IDLE_TIMEOUT_SECONDS = 300
PATIENT_UPDATE_FUNCTION_TIMEOUT = Duration.seconds(60)
PATIENT_UPDATE_FUNCTION_MEMORY_MB = 256
PATIENT_UPDATE_BATCH_SIZE = PATIENT_UPDATE.batch_size
PATIENT_UPDATE_MAX_RECEIVE_COUNT = PATIENT_UPDATE_QUEUE.max_receive_count
MAX_AZS = 2
# TLS ends in the containers (the NLB passes TCP through): DICOM on the registered dicom-tls port,
# MLLP/TLS on the usual MLLP port. Certificates are reloaded this often after a rotation.
DICOM_TLS_PORT = 2762
HL7_TLS_PORT = 2575
TLS_CHECK_SECONDS = 300
# Audit trail and disclosure log: retention of the Object-Locked audit bucket (12 years, the
# Finnish retention of log data about the use of patient records), anchoring schedule.
AUDIT_RETENTION_DAYS = 4383
DISCLOSURE_ANCHOR_EVERY = Duration.hours(1)
DISCLOSURE_ANCHOR_LOOKBACK_HOURS = 3
API_FUNCTION_TIMEOUT = Duration.seconds(29)
API_FUNCTION_MEMORY_MB = 512
TRUSTSTORE_KEY = "truststore.pem"
SYSLOG_TLS_PORT = 6514
# Registration: one message per study and quiet period; a manifest of a large study takes seconds.
REGISTER_FUNCTION_TIMEOUT = Duration.seconds(120)
REGISTER_FUNCTION_MEMORY_MB = 512
REGISTER_BATCH_SIZE = REGISTER_STUDY.batch_size
REGISTER_MAX_RECEIVE_COUNT = REGISTRATION_QUEUE.max_receive_count
# IAN: attempt n failing waits IAN_RETRY_BASE_SECONDS x 2^(n-1) (30 s ... 2 h 8 min); after
# IAN_MAX_ATTEMPTS (about 4 h 15 min in all) the notification is FAILED and dead-lettered (alarm).
IAN_RETRY_BASE_SECONDS = 30
IAN_MAX_ATTEMPTS = 10
IAN_TIMEOUT_SECONDS = 30
# One attempt is connect + associate + N-CREATE, each bounded by IAN_TIMEOUT_SECONDS.
IAN_FUNCTION_TIMEOUT = Duration.seconds(4 * IAN_TIMEOUT_SECONDS)
IAN_FUNCTION_MEMORY_MB = 256
# XDS: ITI-18/42/43 as Lambdas behind API Gateway (whose integration times out at 29 s);
# RAD-69 as a streaming service on Fargate behind its own load balancer (no answer size cap).
XDS_FUNCTION_TIMEOUT = Duration.seconds(29)
XDS_FUNCTION_MEMORY_MB = 1024
XDS_MAX_LEAF_CLASS = 1000
XDS_API_RATE_LIMIT = 50  # requests per second, steady, for the whole stage
XDS_API_BURST_LIMIT = 100
XDS_IMAGING_DOCKERFILE = "listeners/xds_imaging/Dockerfile"
XDS_IMAGING_CONTAINER_PORT = 8080
# With listenerTls: RAD-69 over HTTPS with organisation client certificates, terminated in the
# container (the NLB passes TCP through), on 443 at the load balancer.
XDS_IMAGING_TLS_PORT = 8443
XDS_IMAGING_TLS_LISTENER_PORT = 443
IAN_BATCH_SIZE = SEND_IAN.batch_size  # each notification's backoff is its own message's visibility


@dataclass(frozen=True, kw_only=True)
class ListenerSizing:
    """Task size and scaling of one TCP listener service."""

    cpu: int = 1024
    memory_limit_mib: int = 2048
    # Spool space for datasets in flight (SPOOL_DIR); Fargate allows 21-200 GiB.
    ephemeral_storage_gib: int = 50
    # At least one task per availability zone, so one zone failing leaves the listener up.
    min_tasks: int = MAX_AZS
    max_tasks: int = 10
    cpu_target_percent: int = 60
    # Time to finish open associations or messages after SIGTERM (scale-in, deploys); also the
    # load balancer's deregistration delay. Fargate allows at most 120 s.
    stop_timeout_seconds: int = 120


# RAD-69: memory per answer in flight is about (prefetch + 2) instances (docs/conformance-xds.md),
# so the task is sized for a few concurrent answers of large instances; the spool holds one instance
# per answer.
XDS_IMAGING_SIZING = ListenerSizing(cpu=1024, memory_limit_mib=4096, ephemeral_storage_gib=50, max_tasks=10)

# ADT messages are small and few (hundreds a day per hospital): the smallest Fargate task does;
# nothing is spooled to disk.
HL7_LISTENER_SIZING = ListenerSizing(cpu=256, memory_limit_mib=512, ephemeral_storage_gib=21, max_tasks=4)


def powertools_env(service: str) -> dict[str, str]:
    """Powertools configuration of one service (Lambda function or listener)."""
    return {
        "POWERTOOLS_SERVICE_NAME": service,
        "POWERTOOLS_METRICS_NAMESPACE": POWERTOOLS_METRICS_NAMESPACE,
        "POWERTOOLS_LOG_LEVEL": "INFO",
        # Events carry patient data; never log them whole.
        "POWERTOOLS_LOGGER_LOG_EVENT": "false",
    }


# --- context -------------------------------------------------------------------------------------
CTX_STAGE = "stage"
CTX_OBJECT_LOCK_MODE = "objectLockMode"
CTX_RETENTION_DAYS = "retentionDays"
CTX_LISTENER_TLS = "listenerTls"
CTX_AUDIT_RETENTION_DAYS = "auditRetentionDays"
CTX_AUDIT_SYSLOG_HOST = "auditSyslogHost"
CTX_AUDIT_SYSLOG_PORT = "auditSyslogPort"
CTX_XDS_DOMAIN_NAME = "xdsDomainName"
CTX_XDS_CERTIFICATE_ARN = "xdsCertificateArn"
CTX_XDS_TRUSTSTORE_VERSION = "xdsTruststoreVersion"
# A PEM bundle of the customers' CAs, deployed by CDK to the truststore bucket (docs/security.md).
CTX_XDS_TRUSTSTORE_FILE = "xdsTruststoreFile"
# Gone: the load balancer no longer terminates TLS (it cannot check client certificates).
RETIRED_CONTEXT = ("dicomCertificateArn", "hl7CertificateArn")
CTX_CLIENT_CIDRS = "clientCidrs"
CTX_VPC_CIDR = "vpcCidr"
CTX_ALARM_EMAIL = "alarmEmail"
CTX_INSTANCE_TIERS = "instanceTiers"
CTX_RESTORE_TIER = "restoreTier"
CTX_RESTORE_DAYS = "restoreDays"
CTX_INFREQUENT_ACCESS_TABLES = "infrequentAccessTables"

_STAGE_PATTERN = re.compile(r"^[a-z][a-z0-9-]{0,23}$")


class ObjectLockMode(StrEnum):
    COMPLIANCE = "COMPLIANCE"
    GOVERNANCE = "GOVERNANCE"


@dataclass(frozen=True, kw_only=True)
class DeploymentSettings:
    """What an operator may choose per stack. Defaults are production-grade."""

    stage: str = "production"
    object_lock_mode: ObjectLockMode = ObjectLockMode.COMPLIANCE
    retention_days: int = 3650
    # TLS with organisation certificates in the listener containers, from the stack's TLS secret
    # (filled by the operator before this is turned on; docs/security.md).
    listener_tls: bool = False
    audit_retention_days: int = AUDIT_RETENTION_DAYS
    # An IHE ATNA audit repository that also receives every audit message (ITI-20, syslog/TLS).
    audit_syslog_host: str | None = None
    audit_syslog_port: int = SYSLOG_TLS_PORT
    # The XDS API's custom domain (mutual TLS with the customers' CAs) and its ACM certificate.
    xds_domain_name: str | None = None
    xds_certificate_arn: str | None = None
    xds_truststore_version: str | None = None
    # The customers' CA bundle (PEM file) that CDK deploys as the domain's truststore; without it
    # the operator uploads truststore.pem and names its version (xds_truststore_version).
    xds_truststore_file: str | None = None
    # The VPC's address range; choose one that does not overlap customers' networks reached by VPN.
    vpc_cidr: str = "10.60.0.0/16"
    # Networks allowed to reach the listeners besides the VPC itself. Any public range makes the
    # load balancers internet-facing; private ranges only (VPN, Transit Gateway) keep them internal.
    client_cidrs: tuple[str, ...] = ()
    alarm_email: str | None = None
    # Lifecycle transitions of instance objects: (class, days after storing), ascending; "none" in
    # the context keeps everything in STANDARD.
    instance_tiers: tuple[tuple[str, int], ...] = (("GLACIER_IR", 90), ("DEEP_ARCHIVE", 730))
    restore_tier: str = RESTORE_TIER_DEFAULT
    restore_days: int = RESTORE_DAYS_DEFAULT
    # Tables (logical names) in the DynamoDB Standard-Infrequent-Access table class.
    infrequent_access_tables: tuple[str, ...] = INFREQUENT_ACCESS_TABLES_DEFAULT

    def __post_init__(self) -> None:
        if not _STAGE_PATTERN.match(self.stage):
            raise ValueError(f"{CTX_STAGE} must match {_STAGE_PATTERN.pattern}, got {self.stage!r}")
        if self.retention_days < 1:
            raise ValueError(f"{CTX_RETENTION_DAYS} must be at least 1, got {self.retention_days}")
        if self.object_lock_mode is ObjectLockMode.GOVERNANCE and not self.is_dev:
            # GOVERNANCE retention can be lifted by anyone with s3:BypassGovernanceRetention; an
            # archive whose images must stay unaltered for the legal time cannot allow that.
            raise ValueError(
                f"{CTX_OBJECT_LOCK_MODE}=GOVERNANCE is only allowed for dev stacks "
                f"({CTX_STAGE}=dev or dev-<name>); stage {self.stage!r} needs COMPLIANCE"
            )
        for cidr in (self.vpc_cidr, *self.client_cidrs):
            ipaddress.ip_network(cidr)  # raises ValueError on a typo or host bits set
        if self.listeners_internet_facing and not self.listener_tls:
            raise ValueError(
                f"{CTX_CLIENT_CIDRS} includes public networks: set {CTX_LISTENER_TLS}=true too; "
                "DICOM without TLS must not cross the internet"
            )
        if self.audit_retention_days < 1:
            raise ValueError(
                f"{CTX_AUDIT_RETENTION_DAYS} must be at least 1, got {self.audit_retention_days}"
            )
        if self.audit_syslog_host and not self.listener_tls:
            raise ValueError(
                f"{CTX_AUDIT_SYSLOG_HOST} needs {CTX_LISTENER_TLS}=true: audit messages go out over TLS "
                "with the archive's certificate"
            )
        if bool(self.xds_domain_name) != bool(self.xds_certificate_arn):
            raise ValueError(f"give {CTX_XDS_DOMAIN_NAME} and {CTX_XDS_CERTIFICATE_ARN} together")
        previous = 0
        for name, days in self.instance_tiers:
            if name not in TIER_CLASSES:
                raise ValueError(
                    f"{CTX_INSTANCE_TIERS}: unknown class {name!r}; use {', '.join(TIER_CLASSES)}"
                )
            if days <= previous or days < TIER_MINIMUM_DAYS.get(name, 1):
                raise ValueError(
                    f"{CTX_INSTANCE_TIERS}: {name} after {days} days; transitions must come later and "
                    f"later (STANDARD_IA at 30 days at the earliest)"
                )
            previous = days
        if self.restore_tier not in ("Bulk", "Standard"):
            raise ValueError(f"{CTX_RESTORE_TIER} must be Bulk or Standard, got {self.restore_tier!r}")
        if self.restore_days < 1:
            raise ValueError(f"{CTX_RESTORE_DAYS} must be at least 1, got {self.restore_days}")
        unknown_tables = sorted(set(self.infrequent_access_tables) - set(TABLE_ENV))
        if unknown_tables:
            raise ValueError(
                f"{CTX_INFREQUENT_ACCESS_TABLES}: no such table(s) {', '.join(unknown_tables)}; "
                f"tables are {', '.join(TABLE_ENV)}"
            )

    @property
    def lifecycle_transitions(self) -> tuple[tuple[s3.StorageClass, Duration], ...]:
        return tuple((TIER_CLASSES[name], Duration.days(days)) for name, days in self.instance_tiers)

    @property
    def listener_client_cidrs(self) -> tuple[str, ...]:
        return (self.vpc_cidr, *self.client_cidrs)

    @property
    def listeners_internet_facing(self) -> bool:
        return not all(_is_internal(cidr) for cidr in self.client_cidrs)

    @property
    def is_dev(self) -> bool:
        return self.stage == "dev" or self.stage.startswith("dev-")

    @property
    def stack_name(self) -> str:
        return f"ImagingArchive-{self.stage}"

    @classmethod
    def from_context(cls, node: Node) -> DeploymentSettings:
        """Read the operator's choices; values given with ``-c`` arrive as strings."""
        defaults = cls()

        def get(key: str) -> Any:
            value = node.try_get_context(key)
            return None if value in (None, "") else value

        retired = [key for key in RETIRED_CONTEXT if get(key) is not None]
        if retired:
            raise ValueError(
                f"{', '.join(retired)}: the load balancers no longer terminate TLS (they cannot check "
                f"client certificates); TLS ends in the containers with {CTX_LISTENER_TLS}=true and the "
                "stack's TLS secret (docs/security.md)"
            )
        mode = get(CTX_OBJECT_LOCK_MODE)
        days = get(CTX_RETENTION_DAYS)
        audit_days = get(CTX_AUDIT_RETENTION_DAYS)
        syslog_port = get(CTX_AUDIT_SYSLOG_PORT)
        return cls(
            stage=str(get(CTX_STAGE) or defaults.stage),
            object_lock_mode=ObjectLockMode(str(mode).upper()) if mode else defaults.object_lock_mode,
            retention_days=int(days) if days is not None else defaults.retention_days,
            listener_tls=_flag(get(CTX_LISTENER_TLS)),
            audit_retention_days=int(audit_days) if audit_days is not None else defaults.audit_retention_days,
            audit_syslog_host=get(CTX_AUDIT_SYSLOG_HOST),
            audit_syslog_port=int(syslog_port) if syslog_port is not None else defaults.audit_syslog_port,
            xds_domain_name=get(CTX_XDS_DOMAIN_NAME),
            xds_certificate_arn=get(CTX_XDS_CERTIFICATE_ARN),
            xds_truststore_version=get(CTX_XDS_TRUSTSTORE_VERSION),
            xds_truststore_file=get(CTX_XDS_TRUSTSTORE_FILE),
            vpc_cidr=str(get(CTX_VPC_CIDR) or defaults.vpc_cidr),
            client_cidrs=_string_list(get(CTX_CLIENT_CIDRS)),
            alarm_email=get(CTX_ALARM_EMAIL),
            instance_tiers=(
                parse_tiers(str(get(CTX_INSTANCE_TIERS)))
                if get(CTX_INSTANCE_TIERS) is not None
                else defaults.instance_tiers
            ),
            restore_tier=str(get(CTX_RESTORE_TIER) or defaults.restore_tier),
            restore_days=int(get(CTX_RESTORE_DAYS) or defaults.restore_days),
            infrequent_access_tables=_table_list(get(CTX_INFREQUENT_ACCESS_TABLES))
            if get(CTX_INFREQUENT_ACCESS_TABLES) is not None
            else defaults.infrequent_access_tables,
        )


# Address space reachable only through private connections (RFC 1918, and RFC 6598 shared space
# that Transit Gateway and VPN set-ups often use).
_INTERNAL_NETWORKS = tuple(
    ipaddress.IPv4Network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10")
)


def _is_internal(cidr: str) -> bool:
    network = ipaddress.ip_network(cidr)
    return isinstance(network, ipaddress.IPv4Network) and any(
        network.subnet_of(internal) for internal in _INTERNAL_NETWORKS
    )


def parse_tiers(text: str) -> tuple[tuple[str, int], ...]:
    """``GLACIER_IR:90,DEEP_ARCHIVE:730`` -> ((GLACIER_IR, 90), (DEEP_ARCHIVE, 730)); ``none`` -> ()."""
    if text.strip().lower() == "none":
        return ()
    tiers = []
    for part in _string_list(text):
        name, _, days = part.partition(":")
        if not days.strip().isdigit():
            raise ValueError(f"{CTX_INSTANCE_TIERS}: expected CLASS:DAYS, got {part!r}")
        tiers.append((name.strip().upper(), int(days)))
    return tuple(tiers)


def _table_list(value: Any) -> tuple[str, ...]:
    """Table names from the context; ``none`` keeps every table in the Standard class."""
    if isinstance(value, str) and value.strip().lower() == "none":
        return ()
    return _string_list(value)


def _flag(value: Any) -> bool:
    """A boolean from cdk.json, or "true"/"false" from ``-c key=value``."""
    if value is None or isinstance(value, bool):
        return bool(value)
    text = str(value).strip().lower()
    if text not in ("true", "false", "yes", "no", "1", "0"):
        raise ValueError(f"expected true or false, got {value!r}")
    return text in ("true", "yes", "1")


def _string_list(value: Any) -> tuple[str, ...]:
    """A list from cdk.json, or a comma-separated string from ``-c key=a,b``."""
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return tuple(str(part) for part in value)


def cdk_json_context(path: Path = REPO_ROOT / "cdk.json") -> dict[str, Any]:
    """The context in cdk.json (feature flags), so ``python app.py`` and the tests synthesize
    the same template as ``cdk synth``, which passes it on by itself."""
    context: dict[str, Any] = json.loads(path.read_text()).get("context", {})
    return context
