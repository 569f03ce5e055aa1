"""The archive's stack: composes one construct per capability and wires who may do what."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from archive import topology as t
from archive.data.schema import table_specs
from aws_cdk import Annotations, Duration, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from constructs import Construct

from infrastructure import settings as s
from infrastructure import table_access
from infrastructure.alarms import OperatorAlarms
from infrastructure.api_function import ArchiveFunction
from infrastructure.archive_bucket import ArchiveBucket
from infrastructure.audit_bucket import AuditBucket
from infrastructure.availability import AvailabilityNotifications
from infrastructure.disclosure_apis import AdminApi, CustomerApi, truststore_bundle
from infrastructure.layers import ArchiveLayers
from infrastructure.listener_service import TcpListenerService
from infrastructure.network import ArchiveNetwork
from infrastructure.queue_consumer import QueueConsumerFunction
from infrastructure.queues import DeadLetteredQueue
from infrastructure.registration import StudyRegistration
from infrastructure.retention import DestructionSchedule
from infrastructure.retention_jobs import RetentionJobs
from infrastructure.staging_bucket import StagingBucket
from infrastructure.storage_tiers import StorageTiers
from infrastructure.tables import ArchiveTables
from infrastructure.tls_secret import TlsSecret
from infrastructure.xds_interface import XdsApi

NO_CUSTOMER_API_WARNING_ID = "archive:no-customer-api"


class ArchiveStack(Stack):
    """DICOM listener -> Object-Locked bucket -> index queue -> index Lambda -> DynamoDB; committed
    studies -> registration queue -> register Lambda (manifest, XDS registry) -> IAN queue -> IAN Lambda;
    XDS: API Gateway -> registry/repository Lambdas, RAD-69 streaming service on Fargate."""

    def __init__(
        self, scope: Construct, construct_id: str, *, deployment: s.DeploymentSettings, **kwargs: Any
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)

        storage = ArchiveBucket(
            self,
            "Archive",
            object_lock_mode=deployment.object_lock_mode,
            retention_days=deployment.retention_days,
            tiers=deployment.lifecycle_transitions,
        )
        tables = ArchiveTables(
            self,
            "Tables",
            specs=table_specs(),
            env_vars=t.TABLE_ENV,
            infrequent_access=deployment.infrequent_access_tables,
        )
        # Security (docs/security.md): the Object-Locked audit bucket, the listeners' TLS material.
        audit = AuditBucket(
            self,
            "Audit",
            object_lock_mode=deployment.object_lock_mode,
            retention_days=deployment.audit_retention_days,
            access_logs_bucket=storage.access_logs_bucket,
        )
        tls_secret = TlsSecret(self, "ListenerTls")
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

        # Two tiers (docs/storage.md): C-STORE is acknowledged from the staging tier; the
        # lock_instance function copies each staged object into the Object-Locked bucket.
        staging = StagingBucket(
            self, "Staging", zone_id=s.STAGING_ZONE_ID, expire_after_days=s.STAGING_EXPIRE_DAYS
        )
        lock_queue = DeadLetteredQueue(
            self,
            "LockQueue",
            purpose="lock",
            visibility_timeout=Duration.seconds(6 * s.LOCK_FUNCTION_TIMEOUT.to_seconds()),
            max_receive_count=s.LOCK_MAX_RECEIVE_COUNT,
        )
        alarms.alarm_on_dead_letters(lock_queue.dead_letter_queue, purpose="lock")
        staging_env = {t.ENV_STAGING_BUCKET: staging.bucket_name}

        security_env = {
            t.ENV_AUDIT_BUCKET: audit.bucket.bucket_name,
            t.ENV_AUDIT_SOURCE_ID: s.ARCHIVE_AE_TITLE,
        }
        if deployment.listener_tls:
            security_env[t.ENV_TLS_SECRET_ID] = tls_secret.secret.secret_arn
            security_env[t.ENV_TLS_CHECK_SECONDS] = str(s.TLS_CHECK_SECONDS)
        if deployment.audit_syslog_host:
            security_env[t.ENV_AUDIT_SYSLOG_HOST] = deployment.audit_syslog_host
            security_env[t.ENV_AUDIT_SYSLOG_PORT] = str(deployment.audit_syslog_port)
        archive_env = {
            t.ENV_BUCKET: storage.bucket.bucket_name,
            t.ENV_AE_TITLE: s.ARCHIVE_AE_TITLE,
            t.ENV_OBJECT_LOCK_MODE: deployment.object_lock_mode.value,
            **tables.environment,
            **security_env,
        }

        def may_audit(role: iam.IRole) -> None:
            """Write audit batches; with the TLS material if it forwards them over syslog/TLS."""
            audit.grant_write_audit(role)
            if deployment.listener_tls:
                tls_secret.grant_read(role)

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
        tables.grant(notifications.consumer.role, table_access.SEND_IAN)
        if deployment.listener_tls:
            # IAN to AEs registered with the tls flag goes out over TLS with the archive's certificate.
            tls_secret.grant_read(notifications.consumer.role)
        # Storage tiers: S3 storage-class and restore events -> index; study restores.
        tiers = StorageTiers(
            self,
            "StorageTiers",
            bucket=storage.bucket,
            layers=[layers.deps, layers.core],
            environment={**archive_env, **notifications.environment},
            alarms=alarms,
            restore_tier=deployment.restore_tier,
            restore_days=deployment.restore_days,
        )
        tables.grant(tiers.events_consumer.role, table_access.STORAGE_EVENTS)
        tables.grant(tiers.restore_consumer.role, table_access.RESTORE_STUDY)
        notifications.grant_send(tiers.events_consumer.role)
        storage.grant_restore_objects(tiers.restore_consumer.role)
        registration = StudyRegistration(
            self,
            "StudyRegistration",
            layers=[layers.deps, layers.core],
            environment={**archive_env, **notifications.environment},
            alarms=alarms,
        )
        tables.grant(registration.consumer.role, table_access.REGISTER_STUDY)
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
            environment={**archive_env, **staging_env, **s.powertools_env("index-instance")},
            queue=index_queue.queue,
            batch_size=s.INDEX_BATCH_SIZE,
            timeout=s.INDEX_FUNCTION_TIMEOUT,
            memory_size=s.INDEX_FUNCTION_MEMORY_MB,
            log_retention=s.LOG_RETENTION,
        )
        storage.grant_read_objects(index_instance.role)
        storage.grant_hold_on(index_instance.role)  # an object stored into a study just held
        staging.grant_session(index_instance.role)  # releases a staged copy once indexed
        tables.grant(index_instance.role, table_access.INDEX_INSTANCE)
        registration.grant_request(index_instance.role)

        lock_instance = QueueConsumerFunction(
            self,
            "LockInstance",
            description="Copies each staged DICOM object into the Object-Locked archive bucket",
            code_dir=s.LOCK_FUNCTION_DIR,
            handler=s.LOCK_FUNCTION_HANDLER,
            runtime=s.LAMBDA_RUNTIME,
            architecture=s.LAMBDA_ARCHITECTURE,
            layers=[layers.deps, layers.core],
            environment={
                **archive_env,
                **staging_env,
                t.ENV_LOCK_QUEUE_URL: lock_queue.queue.queue_url,
                **s.powertools_env("lock-instance"),
            },
            queue=lock_queue.queue,
            batch_size=s.LOCK_BATCH_SIZE,
            timeout=s.LOCK_FUNCTION_TIMEOUT,
            memory_size=s.LOCK_FUNCTION_MEMORY_MB,
            ephemeral_storage_gib=s.LOCK_FUNCTION_EPHEMERAL_GIB,
            log_retention=s.LOG_RETENTION,
        )
        staging.grant_session(lock_instance.role)
        storage.grant_read_write_objects(lock_instance.role)

        # Retention jobs: a grown rule or a recorded death lengthens locks, a page per message.
        retention_jobs = RetentionJobs(
            self, "RetentionJobs", layers=[layers.deps, layers.core], environment=archive_env, alarms=alarms
        )
        tables.grant(retention_jobs.consumer.role, table_access.EXTEND_RETENTION)
        storage.grant_extend_retention(retention_jobs.consumer.role)

        destruction = DestructionSchedule(
            self,
            "Destruction",
            code_dir=s.DESTROY_FUNCTION_DIR,
            handler=t.DESTROY_EXPIRED.handler,
            schedule=t.DESTRUCTION_SCHEDULE,
            runtime=s.LAMBDA_RUNTIME,
            architecture=s.LAMBDA_ARCHITECTURE,
            layers=[layers.deps, layers.core],
            environment={**archive_env, **s.powertools_env("destroy-expired")},
            bucket=storage.bucket,
            log_retention=s.LOG_RETENTION,
        )
        storage.key.grant_decrypt(destruction.role)
        tables.grant(destruction.role, table_access.DESTROY_EXPIRED)
        may_audit(destruction.role)
        alarms.alarm_to_operator(destruction.failures)

        dicom = TcpListenerService(
            self,
            "DicomListener",
            name="dicom",
            cluster=network.cluster,
            dockerfile=s.DICOM_DOCKERFILE,
            container_port=s.DICOM_TLS_PORT if deployment.listener_tls else s.DICOM_CONTAINER_PORT,
            environment={
                **archive_env,
                **s.powertools_env(s.DICOM_LISTENER_SERVICE),
                # TLS only when on: the plain port is off, the registered dicom-tls port serves.
                **(
                    {t.ENV_DICOM_PORT: s.PORT_OFF, t.ENV_DICOM_TLS_PORT: str(s.DICOM_TLS_PORT)}
                    if deployment.listener_tls
                    else {t.ENV_DICOM_PORT: str(s.DICOM_CONTAINER_PORT)}
                ),
                t.ENV_SPOOL_DIR: s.LISTENER_SPOOL_DIR,
                t.ENV_COMMITMENT_WAIT: str(s.COMMITMENT_WAIT_SECONDS),
                **staging_env,
                t.ENV_LOCK_QUEUE_URL: lock_queue.queue.queue_url,
                **tiers.environment,
            },
            tls=deployment.listener_tls,
            client_cidrs=deployment.listener_client_cidrs,
            internet_facing=deployment.listeners_internet_facing,
            access_logs_bucket=storage.access_logs_bucket,
        )
        storage.grant_read_write_objects(dicom.task_role)
        staging.grant_session(dicom.task_role)
        lock_queue.grant_send_messages(dicom.task_role)
        tables.grant(dicom.task_role, table_access.DICOM_LISTENER)
        alarms.alarm_on_metric(
            cloudwatch.Metric(
                namespace=s.POWERTOOLS_METRICS_NAMESPACE,
                metric_name=t.COMMITMENT_UNDELIVERABLE_METRIC,
                dimensions_map={"service": s.DICOM_LISTENER_SERVICE},
                statistic=cloudwatch.Stats.SUM,
                period=Duration.minutes(5),
            ),
            purpose="commitment undeliverable",
            description="A storage commitment report could not be delivered after every retry: the "
            "requester does not know its images are committed. List them with `python -m admin "
            "commitment undeliverable`; fix the AE's address, then `commitment redeliver`.",
        )
        alarms.alarm_on_log_text(
            dicom.log_group,
            t.ACCESS_RECORD_LOST_LOG_TEXT,
            purpose="access record lost",
            description="A query or retrieval was answered but its access record (the disclosure log) "
            "could not be written; see the DICOM listener's log for the request.",
        )
        registration.grant_request(dicom.task_role)
        tiers.grant_request_restore(dicom.task_role)
        may_audit(dicom.task_role)

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
            environment={**archive_env, **retention_jobs.environment, **s.powertools_env("patient-update")},
            queue=patient_updates.queue,
            batch_size=s.PATIENT_UPDATE_BATCH_SIZE,
            timeout=s.PATIENT_UPDATE_FUNCTION_TIMEOUT,
            memory_size=s.PATIENT_UPDATE_FUNCTION_MEMORY_MB,
            log_retention=s.LOG_RETENTION,
        )
        tables.grant(patient_update.role, table_access.PATIENT_UPDATE)
        registration.grant_request(patient_update.role)
        retention_jobs.grant_start(patient_update.role)
        may_audit(patient_update.role)
        hl7 = TcpListenerService(
            self,
            "Hl7Listener",
            name="hl7",
            cluster=network.cluster,
            dockerfile=s.HL7_DOCKERFILE,
            container_port=s.HL7_TLS_PORT if deployment.listener_tls else s.HL7_CONTAINER_PORT,
            environment={
                **archive_env,
                **s.powertools_env("hl7-listener"),
                **(
                    {t.ENV_HL7_PORT: s.PORT_OFF, t.ENV_HL7_TLS_PORT: str(s.HL7_TLS_PORT)}
                    if deployment.listener_tls
                    else {t.ENV_HL7_PORT: str(s.HL7_CONTAINER_PORT)}
                ),
                t.ENV_PATIENT_UPDATE_QUEUE_URL: patient_updates.queue.queue_url,
                t.ENV_HL7_MAX_MESSAGE_BYTES: str(s.HL7_MAX_MESSAGE_BYTES),
                t.ENV_HL7_IDLE_TIMEOUT: str(s.HL7_IDLE_TIMEOUT_SECONDS),
            },
            tls=deployment.listener_tls,
            client_cidrs=deployment.listener_client_cidrs,
            internet_facing=deployment.listeners_internet_facing,
            access_logs_bucket=storage.access_logs_bucket,
            sizing=s.HL7_LISTENER_SIZING,
        )
        patient_updates.grant_send_messages(hl7.task_role)
        # The listener only reads (merged/duplicate checks before queueing); the Lambda writes.
        tables.grant(hl7.task_role, table_access.HL7_LISTENER)
        may_audit(hl7.task_role)

        # The disclosure log: customers' notifications (XDS domain, mutual TLS), the admin API's
        # reports and verification, the hourly anchoring of chain heads in the audit bucket.
        def function(construct_id: str, description: str, code_dir: Path, service: str) -> ArchiveFunction:
            return ArchiveFunction(
                self,
                construct_id,
                description=description,
                code_dir=code_dir,
                handler="handler.handler",
                runtime=s.LAMBDA_RUNTIME,
                architecture=s.LAMBDA_ARCHITECTURE,
                layers=[layers.deps, layers.core],
                environment={
                    **archive_env,
                    **s.powertools_env(service),
                    t.ENV_ANCHOR_LOOKBACK_HOURS: str(s.DISCLOSURE_ANCHOR_LOOKBACK_HOURS),
                },
                timeout=s.API_FUNCTION_TIMEOUT,
                memory_size=s.API_FUNCTION_MEMORY_MB,
                log_retention=s.LOG_RETENTION,
            )

        reports = function(
            "DisclosureReports",
            "Disclosure log reports and verification (admin API)",
            s.ADMIN_API_FUNCTION_DIR,
            "admin-api",
        )
        tables.grant(reports.role, table_access.ADMIN_API)
        audit.grant_read_anchors(reports.role)
        AdminApi(self, "AdminApi", function=reports.function, log_retention=s.LOG_RETENTION)

        anchor = function(
            "DisclosureAnchor",
            "Anchors disclosure-log chain heads in the audit bucket",
            s.ANCHOR_FUNCTION_DIR,
            "disclosure-anchor",
        )
        tables.grant(anchor.role, table_access.DISCLOSURE_ANCHOR)
        audit.grant_anchor(anchor.role)
        events.Rule(
            self,
            "DisclosureAnchorSchedule",
            description="Anchor the disclosure log's chain heads in the Object-Locked audit bucket",
            schedule=events.Schedule.rate(s.DISCLOSURE_ANCHOR_EVERY),
            targets=[targets.LambdaFunction(anchor.function, retry_attempts=2)],
        )

        # The XDS API is created before the customers' domain, which it sits behind when configured.
        mutual_tls = bool(deployment.xds_domain_name and deployment.xds_certificate_arn)
        xds = XdsApi(
            self,
            "Xds",
            layers=[layers.deps, layers.core],
            environment=archive_env,
            behind_mutual_tls_domain=mutual_tls,
        )
        if deployment.xds_domain_name and deployment.xds_certificate_arn:
            disclosure_notifications = function(
                "DisclosureNotifications",
                "Customers' disclosure notifications",
                s.NOTIFICATION_FUNCTION_DIR,
                "disclosure-notification",
            )
            tables.grant(disclosure_notifications.role, table_access.DISCLOSURE_NOTIFICATION)
            may_audit(disclosure_notifications.role)
            CustomerApi(
                self,
                "CustomerApi",
                notification_function=disclosure_notifications.function,
                xds_api=xds.api,
                domain_name=deployment.xds_domain_name,
                certificate_arn=deployment.xds_certificate_arn,
                truststore_version=deployment.xds_truststore_version,
                truststore_key=s.TRUSTSTORE_KEY,
                truststore_pem=truststore_bundle(deployment.xds_truststore_file),
                access_logs_bucket=storage.access_logs_bucket,
                log_retention=s.LOG_RETENTION,
            )
        else:
            Annotations.of(self).add_warning_v2(
                NO_CUSTOMER_API_WARNING_ID,
                f"No {s.CTX_XDS_DOMAIN_NAME}: the customers' API (disclosure notifications, mutual TLS) "
                "is not deployed; see docs/security.md.",
            )

        # XDS: ITI-18/ITI-42 and ITI-43 through API Gateway; RAD-69 streams from Fargate behind its
        # own load balancer, because a Lambda answer stops at 6 MB (buffered) or 200 MB (streamed).
        tables.grant(xds.registry.role, table_access.XDS_REGISTRY)
        tables.grant(xds.repository.role, table_access.XDS_REPOSITORY)
        storage.grant_read_objects(xds.repository.role)  # ITI-43 reads the manifests
        imaging = TcpListenerService(
            self,
            "XdsImaging",
            name="xds-imaging",
            cluster=network.cluster,
            dockerfile=s.XDS_IMAGING_DOCKERFILE,
            # With listenerTls the container terminates TLS itself with the organisation
            # certificates (as the DICOM and HL7 listeners do; the NLB passes TCP through) and its
            # plain port is off; without it, plain HTTP on an internal load balancer only.
            container_port=s.XDS_IMAGING_TLS_PORT
            if deployment.listener_tls
            else s.XDS_IMAGING_CONTAINER_PORT,
            listener_port=s.XDS_IMAGING_TLS_LISTENER_PORT if deployment.listener_tls else None,
            environment={
                **archive_env,
                **s.powertools_env("xds-imaging"),
                t.ENV_XDS_HOST: "0.0.0.0",  # every interface of its task; only the load balancer reaches it
                **(
                    {t.ENV_XDS_PORT: s.PORT_OFF, t.ENV_XDS_TLS_PORT: str(s.XDS_IMAGING_TLS_PORT)}
                    if deployment.listener_tls
                    else {t.ENV_XDS_PORT: str(s.XDS_IMAGING_CONTAINER_PORT)}
                ),
                t.ENV_SPOOL_DIR: s.LISTENER_SPOOL_DIR,
            },
            tls=deployment.listener_tls,
            client_cidrs=deployment.listener_client_cidrs,
            internet_facing=deployment.listeners_internet_facing if deployment.listener_tls else False,
            access_logs_bucket=storage.access_logs_bucket,
            sizing=s.XDS_IMAGING_SIZING,
        )
        storage.grant_read_objects(imaging.task_role)
        tables.grant(imaging.task_role, table_access.XDS_IMAGING)
        tiers.grant_request_restore(imaging.task_role)
        may_audit(imaging.task_role)
        may_audit(xds.registry.role)
        may_audit(xds.repository.role)
