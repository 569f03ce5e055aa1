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
ENV_AE_TITLE = "ARCHIVE_AE_TITLE"
ENV_COMMITMENT_WAIT = "COMMITMENT_WAIT_SECONDS"
ENV_COMMITMENT_RETRY_BASE = "COMMITMENT_RETRY_BASE_SECONDS"
ENV_COMMITMENT_MAX_ATTEMPTS = "COMMITMENT_MAX_ATTEMPTS"
ENV_MAX_OBJECT_BYTES = "MAX_OBJECT_BYTES"
ENV_SPOOL_DIR = "SPOOL_DIR"
ENV_INDEX_QUEUE_URL = "INDEX_QUEUE_URL"
# Registration (XDS-I.b manifests) and IAN delivery:
ENV_REGISTRATION_QUEUE_URL = "REGISTRATION_QUEUE_URL"
ENV_IAN_QUEUE_URL = "IAN_QUEUE_URL"
ENV_IAN_RETRY_BASE = "IAN_RETRY_BASE_SECONDS"
ENV_IAN_MAX_ATTEMPTS = "IAN_MAX_ATTEMPTS"
ENV_IAN_TIMEOUT = "IAN_TIMEOUT_SECONDS"
# Read by listeners/dicom/__main__.py:
ENV_DICOM_HOST = "DICOM_HOST"
ENV_DICOM_PORT = "DICOM_PORT"
# Read by listeners/hl7/app.py (HL7ListenerSettings.from_env):
ENV_HL7_HOST = "HL7_HOST"
ENV_HL7_PORT = "HL7_PORT"
ENV_PATIENT_UPDATE_QUEUE_URL = "PATIENT_UPDATE_QUEUE_URL"
ENV_HL7_MAX_MESSAGE_BYTES = "HL7_MAX_MESSAGE_BYTES"
ENV_HL7_IDLE_TIMEOUT = "HL7_IDLE_TIMEOUT_SECONDS"

# --- tables: logical name -> environment variable holding the physical table name ---------------
TABLE_ENV = {
    "organisations": "TABLE_ORGANISATIONS",
    "application_entities": "TABLE_APPLICATION_ENTITIES",
    "patients": "TABLE_PATIENTS",
    "studies": "TABLE_STUDIES",
    "series": "TABLE_SERIES",
    "instances": "TABLE_INSTANCES",
    "commitments": "TABLE_COMMITMENTS",
    "access_log": "TABLE_ACCESS_LOG",
    "hl7_facilities": "TABLE_HL7_FACILITIES",
    "patient_history": "TABLE_PATIENT_HISTORY",
    "xds_registry": "TABLE_XDS_REGISTRY",
    "registrations": "TABLE_REGISTRATIONS",
    "ian_notifications": "TABLE_IAN_NOTIFICATIONS",
    "registration_config": "TABLE_REGISTRATION_CONFIG",
}


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
QUEUES = (INDEX_QUEUE, PATIENT_UPDATE_QUEUE, REGISTRATION_QUEUE, IAN_QUEUE)

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
CONSUMERS = (INDEX_INSTANCE, PATIENT_UPDATE, REGISTER_STUDY, SEND_IAN)
