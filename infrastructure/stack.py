"""The archive's stack: composes one construct per capability and wires who may do what."""

from __future__ import annotations

from typing import Any

from archive import topology as t
from archive.data.schema import table_specs
from aws_cdk import Duration, Stack
from constructs import Construct

from infrastructure import settings as s
from infrastructure.alarms import OperatorAlarms
from infrastructure.archive_bucket import ArchiveBucket
from infrastructure.availability import AvailabilityNotifications
from infrastructure.layers import ArchiveLayers
from infrastructure.listener_service import TcpListenerService
from infrastructure.network import ArchiveNetwork
from infrastructure.queue_consumer import QueueConsumerFunction
from infrastructure.queues import DeadLetteredQueue
from infrastructure.registration import StudyRegistration
from infrastructure.tables import ArchiveTables


class ArchiveStack(Stack):
    """DICOM listener -> Object-Locked bucket -> index queue -> index Lambda -> DynamoDB; committed
    studies -> registration queue -> register Lambda (manifest, XDS registry) -> IAN queue -> IAN Lambda."""

    def __init__(
        self, scope: Construct, construct_id: str, *, deployment: s.DeploymentSettings, **kwargs: Any
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)

        storage = ArchiveBucket(
            self,
            "Archive",
            object_lock_mode=deployment.object_lock_mode,
            retention_days=deployment.retention_days,
        )
        tables = ArchiveTables(self, "Tables", specs=table_specs(), env_vars=t.TABLE_ENV)
        index_queue = DeadLetteredQueue(
            self,
            "IndexQueue",
            purpose="index",
            # Six times the function timeout, as AWS recommends for Lambda event sources.
            visibility_timeout=Duration.seconds(6 * s.INDEX_FUNCTION_TIMEOUT.to_seconds()),
            max_receive_count=s.INDEX_MAX_RECEIVE_COUNT,
        )
        storage.notify_object_created(index_queue.queue)

        alarms = OperatorAlarms(self, "Alarms", email=deployment.alarm_email)
        alarms.alarm_on_dead_letters(index_queue.dead_letter_queue, purpose="index")

        archive_env = {
            t.ENV_BUCKET: storage.bucket.bucket_name,
            t.ENV_AE_TITLE: s.ARCHIVE_AE_TITLE,
            **tables.environment,
        }

        layers = ArchiveLayers(
            self,
            "Layers",
            core_dir=s.CORE_LAYER_DIR,
            deps_dir=s.DEPS_REQUIREMENTS_DIR,
            runtime=s.LAMBDA_RUNTIME,
            architecture=s.LAMBDA_ARCHITECTURE,
        )
        network = ArchiveNetwork(
            self,
            "Network",
            cidr=deployment.vpc_cidr,
            max_azs=s.MAX_AZS,
            nat_gateways=s.NAT_GATEWAYS,
            log_retention=s.LOG_RETENTION,
        )

        # Registration of committed studies (XDS-I.b manifests) and its confirmation (IAN).
        notifications = AvailabilityNotifications(
            self,
            "AvailabilityNotifications",
            layers=[layers.deps, layers.core],
            environment=archive_env,
            alarms=alarms,
            vpc=network.vpc,
        )
        tables.grant_read_write(notifications.consumer.role)
        registration = StudyRegistration(
            self,
            "StudyRegistration",
            layers=[layers.deps, layers.core],
            environment={**archive_env, **notifications.environment},
            alarms=alarms,
        )
        tables.grant_read_write(registration.consumer.role)
        storage.grant_read_write_objects(registration.consumer.role)
        notifications.grant_send(registration.consumer.role)
        # Everything below may ask for a registration: the commitment worker (DICOM listener), the
        # indexer (a registered study changed) and patient updates (merges, name changes).
        archive_env = {**archive_env, **registration.environment}
        index_instance = QueueConsumerFunction(
            self,
            "IndexInstance",
            description="Indexes each DICOM object stored in the archive bucket",
            code_dir=s.INDEX_FUNCTION_DIR,
            handler=s.INDEX_FUNCTION_HANDLER,
            runtime=s.LAMBDA_RUNTIME,
            architecture=s.LAMBDA_ARCHITECTURE,
            layers=[layers.deps, layers.core],
            environment={**archive_env, **s.powertools_env("index-instance")},
            queue=index_queue.queue,
            batch_size=s.INDEX_BATCH_SIZE,
            timeout=s.INDEX_FUNCTION_TIMEOUT,
            memory_size=s.INDEX_FUNCTION_MEMORY_MB,
            log_retention=s.LOG_RETENTION,
        )
        storage.grant_read_objects(index_instance.role)
        tables.grant_read_write(index_instance.role)
        registration.grant_request(index_instance.role)

        dicom = TcpListenerService(
            self,
            "DicomListener",
            name="dicom",
            cluster=network.cluster,
            dockerfile=s.DICOM_DOCKERFILE,
            container_port=s.DICOM_CONTAINER_PORT,
            environment={
                **archive_env,
                **s.powertools_env("dicom-listener"),
                t.ENV_DICOM_PORT: str(s.DICOM_CONTAINER_PORT),
                t.ENV_SPOOL_DIR: s.LISTENER_SPOOL_DIR,
                t.ENV_COMMITMENT_WAIT: str(s.COMMITMENT_WAIT_SECONDS),
            },
            certificate_arn=deployment.dicom_certificate_arn,
            client_cidrs=deployment.listener_client_cidrs,
            internet_facing=deployment.listeners_internet_facing,
            access_logs_bucket=storage.access_logs_bucket,
        )
        storage.grant_read_write_objects(dicom.task_role)
        tables.grant_read_write(dicom.task_role)
        registration.grant_request(dicom.task_role)

        # HL7 patient administration: MLLP listener -> FIFO queue (per patient) -> Lambda -> index.
        patient_updates = DeadLetteredQueue(
            self,
            "PatientUpdateQueue",
            purpose="patient update",
            visibility_timeout=Duration.seconds(6 * s.PATIENT_UPDATE_FUNCTION_TIMEOUT.to_seconds()),
            max_receive_count=s.PATIENT_UPDATE_MAX_RECEIVE_COUNT,
            fifo=True,
        )
        alarms.alarm_on_dead_letters(patient_updates.dead_letter_queue, purpose="patient update")
        patient_update = QueueConsumerFunction(
            self,
            "PatientUpdate",
            description="Applies HL7 patient merges, identifier changes and name updates to the index",
            code_dir=s.PATIENT_UPDATE_FUNCTION_DIR,
            handler=s.PATIENT_UPDATE_FUNCTION_HANDLER,
            runtime=s.LAMBDA_RUNTIME,
            architecture=s.LAMBDA_ARCHITECTURE,
            layers=[layers.deps, layers.core],
            environment={**archive_env, **s.powertools_env("patient-update")},
            queue=patient_updates.queue,
            batch_size=s.PATIENT_UPDATE_BATCH_SIZE,
            timeout=s.PATIENT_UPDATE_FUNCTION_TIMEOUT,
            memory_size=s.PATIENT_UPDATE_FUNCTION_MEMORY_MB,
            log_retention=s.LOG_RETENTION,
        )
        tables.grant_read_write(patient_update.role)
        registration.grant_request(patient_update.role)
        hl7 = TcpListenerService(
            self,
            "Hl7Listener",
            name="hl7",
            cluster=network.cluster,
            dockerfile=s.HL7_DOCKERFILE,
            container_port=s.HL7_CONTAINER_PORT,
            environment={
                **archive_env,
                **s.powertools_env("hl7-listener"),
                t.ENV_HL7_PORT: str(s.HL7_CONTAINER_PORT),
                t.ENV_PATIENT_UPDATE_QUEUE_URL: patient_updates.queue.queue_url,
                t.ENV_HL7_MAX_MESSAGE_BYTES: str(s.HL7_MAX_MESSAGE_BYTES),
                t.ENV_HL7_IDLE_TIMEOUT: str(s.HL7_IDLE_TIMEOUT_SECONDS),
            },
            certificate_arn=deployment.hl7_certificate,
            client_cidrs=deployment.listener_client_cidrs,
            internet_facing=deployment.listeners_internet_facing,
            access_logs_bucket=storage.access_logs_bucket,
            sizing=s.HL7_LISTENER_SIZING,
        )
        patient_updates.queue.grant_send_messages(hl7.task_role)
        # The listener only reads (merged/duplicate checks before queueing); the Lambda writes.
        tables.grant_read(hl7.task_role)
