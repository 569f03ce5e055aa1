"""The deployment's topology as plain data: which queues exist, which function consumes each, which
tables there are and the environment variable names that carry them all into the code.

Ground floor, like ``config``: no imports from the archive. CDK (``infrastructure/``) builds the
stack from it, the local cloud (``local/``) builds its stand-in from it, and ``config.Settings`` and
the listeners read the environment by these names, so the three cannot drift apart. Table key
schemas come from the pynamodb models (``archive.data.schema``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

# --- environment variable names -----------------------------------------------------------------
# Read by archive.config.Settings (every process):
ENV_REGION = "AWS_REGION"
ENV_DEFAULT_REGION = "AWS_DEFAULT_REGION"
ENV_ENDPOINT_URL = "AWS_ENDPOINT_URL"  # only the local cloud sets it
ENV_BUCKET = "ARCHIVE_BUCKET"
# The low-latency landing tier (docs/storage.md): an S3 Express One Zone directory bucket on AWS.
# Unset: the listener writes straight to the Object-Locked bucket.
ENV_STAGING_BUCKET = "STAGING_BUCKET"
ENV_LOCK_QUEUE_URL = "LOCK_QUEUE_URL"
ENV_AE_TITLE = "ARCHIVE_AE_TITLE"
ENV_COMMITMENT_WAIT = "COMMITMENT_WAIT_SECONDS"
ENV_COMMITMENT_RETRY_BASE = "COMMITMENT_RETRY_BASE_SECONDS"
ENV_COMMITMENT_MAX_ATTEMPTS = "COMMITMENT_MAX_ATTEMPTS"
ENV_COMMITMENT_DELIVERY_TIMEOUT = "COMMITMENT_DELIVERY_TIMEOUT_SECONDS"
# Powertools' own variable; also the namespace of the metrics the listeners emit themselves.
ENV_METRICS_NAMESPACE = "POWERTOOLS_METRICS_NAMESPACE"
ENV_MAX_OBJECT_BYTES = "MAX_OBJECT_BYTES"
ENV_SPOOL_DIR = "SPOOL_DIR"
ENV_INDEX_QUEUE_URL = "INDEX_QUEUE_URL"
ENV_OBJECT_LOCK_MODE = "OBJECT_LOCK_MODE"
ENV_MINIMUM_LOCK_SECONDS = "MINIMUM_LOCK_SECONDS"
ENV_REGISTRY_REMOVAL_SECONDS = "REGISTRY_REMOVAL_SECONDS"
# Security (docs/security.md): the audit trail, the TLS material, the disclosure log's anchoring.
ENV_AUDIT_BUCKET = "AUDIT_BUCKET"
ENV_AUDIT_SOURCE_ID = "AUDIT_SOURCE_ID"
ENV_AUDIT_SITE_ID = "AUDIT_ENTERPRISE_SITE_ID"
ENV_AUDIT_FLUSH_SECONDS = "AUDIT_FLUSH_SECONDS"
ENV_AUDIT_SYSLOG_HOST = "AUDIT_SYSLOG_HOST"
ENV_AUDIT_SYSLOG_PORT = "AUDIT_SYSLOG_PORT"
ENV_TLS_SECRET_ID = "TLS_SECRET_ID"  # noqa: S105 - the variable's name, not a secret
ENV_TLS_CHECK_SECONDS = "TLS_CHECK_SECONDS"
ENV_ANCHOR_LOOKBACK_HOURS = "DISCLOSURE_ANCHOR_LOOKBACK_HOURS"
# Registration (XDS-I.b manifests) and IAN delivery:
ENV_REGISTRATION_QUEUE_URL = "REGISTRATION_QUEUE_URL"
ENV_IAN_QUEUE_URL = "IAN_QUEUE_URL"
ENV_IAN_RETRY_BASE = "IAN_RETRY_BASE_SECONDS"
ENV_IAN_MAX_ATTEMPTS = "IAN_MAX_ATTEMPTS"
ENV_IAN_TIMEOUT = "IAN_TIMEOUT_SECONDS"
# Storage tiers (docs/storage.md, "Tiers and restores"): S3 events about storage classes and
# restores, the study restore jobs, and how a restore is made (Bulk or Standard, days kept).
ENV_STORAGE_EVENTS_QUEUE_URL = "STORAGE_EVENTS_QUEUE_URL"
ENV_RESTORE_QUEUE_URL = "RESTORE_QUEUE_URL"
ENV_RESTORE_TIER = "RESTORE_TIER"
ENV_RESTORE_DAYS = "RESTORE_DAYS"
# Retention jobs (docs/retention.md): a grown rule or a recorded death lengthens locks page by page.
ENV_RETENTION_QUEUE_URL = "RETENTION_QUEUE_URL"
ENV_RETENTION_PAGE_OBJECTS = "RETENTION_PAGE_OBJECTS"
# Read by listeners/dicom/__main__.py:
ENV_DICOM_HOST = "DICOM_HOST"
ENV_DICOM_PORT = "DICOM_PORT"
ENV_DICOM_TLS_PORT = "DICOM_TLS_PORT"
# Read by listeners/hl7/app.py (HL7ListenerSettings.from_env):
ENV_HL7_HOST = "HL7_HOST"
ENV_HL7_PORT = "HL7_PORT"
ENV_HL7_TLS_PORT = "HL7_TLS_PORT"
ENV_PATIENT_UPDATE_QUEUE_URL = "PATIENT_UPDATE_QUEUE_URL"
ENV_HL7_MAX_MESSAGE_BYTES = "HL7_MAX_MESSAGE_BYTES"
ENV_HL7_IDLE_TIMEOUT = "HL7_IDLE_TIMEOUT_SECONDS"
# Read by listeners/xds_imaging (RAD-69 streaming service) and local/gateway.py:
ENV_XDS_HOST = "XDS_HOST"
ENV_XDS_PORT = "XDS_PORT"  # "off": no plain HTTP (TLS only)
ENV_XDS_TLS_PORT = "XDS_TLS_PORT"  # HTTPS with organisation client certificates; needs TLS_SECRET_ID
# ITI-18: the most objects a LeafClass answer may hold before XDSTooManyResults.
ENV_XDS_MAX_LEAF_CLASS = "XDS_MAX_LEAF_CLASS"

# --- tables: logical name -> environment variable holding the physical table name ---------------
TABLE_ENV = {
    "organisations": "TABLE_ORGANISATIONS",
    "application_entities": "TABLE_APPLICATION_ENTITIES",
    "patients": "TABLE_PATIENTS",
    "studies": "TABLE_STUDIES",
    "series": "TABLE_SERIES",
    "instances": "TABLE_INSTANCES",
    "commitments": "TABLE_COMMITMENTS",
    "commitment_parts": "TABLE_COMMITMENT_PARTS",
    "access_log": "TABLE_ACCESS_LOG",
    "hl7_facilities": "TABLE_HL7_FACILITIES",
    "patient_history": "TABLE_PATIENT_HISTORY",
    "rejections": "TABLE_REJECTIONS",
    "retention_rules": "TABLE_RETENTION_RULES",
    "retention_jobs": "TABLE_RETENTION_JOBS",
    "legal_holds": "TABLE_LEGAL_HOLDS",
    "destruction_records": "TABLE_DESTRUCTION_RECORDS",
    "xds_registry": "TABLE_XDS_REGISTRY",
    "registrations": "TABLE_REGISTRATIONS",
    "ian_notifications": "TABLE_IAN_NOTIFICATIONS",
    "registration_config": "TABLE_REGISTRATION_CONFIG",
    "disclosure_log": "TABLE_DISCLOSURE_LOG",
}


# --- what the operator is alarmed on (CDK builds the alarms; the code emits or logs these) -------
# CloudWatch metric (embedded metric format, dimension ``service``) the DICOM listener emits when
# it gives a storage commitment report up (UNDELIVERABLE).
COMMITMENT_UNDELIVERABLE_METRIC = "CommitmentsUndeliverable"
# Logged at ERROR by the DICOM listener when a disclosure's access record cannot be written.
ACCESS_RECORD_LOST_LOG_TEXT = "ACCESS RECORD LOST"


# --- queues and their consumers -----------------------------------------------------------------
@dataclass(frozen=True)
class QueueSpec:
    """An SQS queue with its dead-letter queue."""

    name: str  # logical name
    fifo: bool
    max_receive_count: int  # receives before a message goes to the DLQ
    url_env: str  # the environment variable a producer finds the queue URL in


@dataclass(frozen=True)
class ConsumerSpec:
    """A Lambda function fed by a queue (an SQS event source mapping)."""

    function: str
    code_dir: str  # relative to the repository root
    handler: str  # module.function inside code_dir
    queue: str  # QueueSpec.name
    batch_size: int

    @property
    def handler_file(self) -> str:
        return str(PurePosixPath(self.code_dir) / f"{self.handler.rsplit('.', 1)[0]}.py")


# S3 ObjectCreated -> the index_instance function.
INDEX_QUEUE = QueueSpec("index", fifo=False, max_receive_count=5, url_env=ENV_INDEX_QUEUE_URL)
# HL7 patient changes from the MLLP listener: FIFO, ordered per patient, deduplicated per message.
PATIENT_UPDATE_QUEUE = QueueSpec(
    "patient-updates", fifo=True, max_receive_count=5, url_env=ENV_PATIENT_UPDATE_QUEUE_URL
)
# Studies to register: delayed by the organisation's stability time; see docs/registration.md.
REGISTRATION_QUEUE = QueueSpec(
    "registration", fifo=False, max_receive_count=5, url_env=ENV_REGISTRATION_QUEUE_URL
)
# One message per IAN; each failed attempt hides it for the backoff. Receives before the DLQ = the
# number of attempts, which the deployment sets (IAN_MAX_ATTEMPTS); this is the default.
IAN_QUEUE = QueueSpec("ian", fifo=False, max_receive_count=10, url_env=ENV_IAN_QUEUE_URL)
# S3 "Object Storage Class Changed" / "Object Restore Completed" / "Object Restore Expired" events
# (EventBridge on AWS, the local lifecycle simulation locally) -> the storage_events function.
STORAGE_EVENTS_QUEUE = QueueSpec(
    "storage-events", fifo=False, max_receive_count=5, url_env=ENV_STORAGE_EVENTS_QUEUE_URL
)
# One message per study restore: the restore_study function issues RestoreObject per object.
RESTORE_QUEUE = QueueSpec("restore", fifo=False, max_receive_count=5, url_env=ENV_RESTORE_QUEUE_URL)
# Staged instances to copy into the Object-Locked bucket (docs/storage.md). Each failed copy hides
# its message for a growing backoff, so this many receives span hours of an outage before the DLQ.
LOCK_QUEUE = QueueSpec("lock", fifo=False, max_receive_count=20, url_env=ENV_LOCK_QUEUE_URL)
# Retention jobs: one message per page of studies; each page queues the next (a continuation).
RETENTION_QUEUE = QueueSpec("retention", fifo=False, max_receive_count=5, url_env=ENV_RETENTION_QUEUE_URL)
QUEUES = (
    INDEX_QUEUE,
    PATIENT_UPDATE_QUEUE,
    REGISTRATION_QUEUE,
    IAN_QUEUE,
    STORAGE_EVENTS_QUEUE,
    RESTORE_QUEUE,
    LOCK_QUEUE,
    RETENTION_QUEUE,
)

INDEX_INSTANCE = ConsumerSpec(
    "index_instance", "functions/index_instance", "handler.handler", queue=INDEX_QUEUE.name, batch_size=10
)
PATIENT_UPDATE = ConsumerSpec(
    "patient_update",
    "functions/patient_update",
    "handler.handler",
    queue=PATIENT_UPDATE_QUEUE.name,
    batch_size=10,
)
REGISTER_STUDY = ConsumerSpec(
    "register_study",
    "functions/register_study",
    "handler.handler",
    queue=REGISTRATION_QUEUE.name,
    batch_size=5,
)
# One notification per invocation: each message's visibility is its own backoff.
SEND_IAN = ConsumerSpec(
    "send_ian", "functions/send_ian", "handler.handler", queue=IAN_QUEUE.name, batch_size=1
)
STORAGE_EVENTS = ConsumerSpec(
    "storage_events",
    "functions/storage_events",
    "handler.handler",
    queue=STORAGE_EVENTS_QUEUE.name,
    batch_size=10,
)
RESTORE_STUDY = ConsumerSpec(
    "restore_study", "functions/restore_study", "handler.handler", queue=RESTORE_QUEUE.name, batch_size=1
)
LOCK_INSTANCE = ConsumerSpec(
    "lock_instance", "functions/lock_instance", "handler.handler", queue=LOCK_QUEUE.name, batch_size=10
)
# One page per invocation: a page is bounded (RETENTION_PAGE studies) and queues the next.
EXTEND_RETENTION = ConsumerSpec(
    "extend_retention",
    "functions/extend_retention",
    "handler.handler",
    queue=RETENTION_QUEUE.name,
    batch_size=1,
)
CONSUMERS = (
    INDEX_INSTANCE,
    PATIENT_UPDATE,
    REGISTER_STUDY,
    SEND_IAN,
    STORAGE_EVENTS,
    RESTORE_STUDY,
    LOCK_INSTANCE,
    EXTEND_RETENTION,
)


# --- the XDS HTTP interface (API Gateway routes -> Lambda; RAD-69 -> the streaming service) ------
XDS_REGISTRY_PATH = "/xds/registry"
XDS_REPOSITORY_PATH = "/xds/repository"
XDS_IMAGING_PATH = "/xds/imaging"


# --- functions not fed by a queue -------------------------------------------------------------------
@dataclass(frozen=True)
class FunctionSpec:
    """A Lambda function behind API Gateway or run on a schedule (EventBridge Scheduler on AWS, on
    demand locally)."""

    function: str
    code_dir: str  # relative to the repository root
    handler: str
    schedule: str | None = None  # an EventBridge Scheduler expression, for the scheduled ones
    path: str = ""  # the API Gateway resource path it serves (REST, proxy integration), if any

    @property
    def handler_file(self) -> str:
        return str(PurePosixPath(self.code_dir) / f"{self.handler.rsplit('.', 1)[0]}.py")


# Lawful destruction of studies whose retention has ended (docs/retention.md).
DESTRUCTION_SCHEDULE = "cron(0 2 * * ? *)"
DESTROY_EXPIRED = FunctionSpec(
    "destroy_expired", "functions/destroy_expired", "handler.handler", schedule=DESTRUCTION_SCHEDULE
)
SCHEDULED = (DESTROY_EXPIRED,)
# Customers' disclosure notifications (POST /disclosures/notifications, mutual TLS).
DISCLOSURE_NOTIFICATION = FunctionSpec(
    "disclosure_notification", "functions/disclosure_notification", "handler.handler"
)
# The admin API's disclosure reports and chain verification (IAM).
ADMIN_API = FunctionSpec("admin_api", "functions/admin_api", "handler.handler")
# Hourly: the heads of grown disclosure chains into the Object-Locked audit bucket.
DISCLOSURE_ANCHOR = FunctionSpec("disclosure_anchor", "functions/disclosure_anchor", "handler.handler")
# The XDS endpoints API Gateway sends to Lambda (docs/conformance-xds.md).
XDS_REGISTRY = FunctionSpec(
    "xds_registry", "functions/xds_registry", "handler.handler", path=XDS_REGISTRY_PATH
)
XDS_REPOSITORY = FunctionSpec(
    "xds_repository", "functions/xds_repository", "handler.handler", path=XDS_REPOSITORY_PATH
)
XDS_FUNCTIONS = (XDS_REGISTRY, XDS_REPOSITORY)
