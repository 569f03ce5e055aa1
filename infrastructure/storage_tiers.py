"""Storage tiers: S3's storage-class and restore events into the index, and study restores.

The archive bucket sends its events to EventBridge; a rule picks the archive bucket's "Object
Storage Class Changed", "Object Restore Completed" and "Object Restore Expired" events and puts
them on the storage-events queue, whose storage_events Lambda keeps each instance's availability
(NEARLINE/ONLINE) in the index. Retrievals and operators queue study restores on the restore queue,
whose restore_study Lambda issues RestoreObject per cold object (docs/storage.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from archive import topology as t
from aws_cdk import Duration
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infrastructure import settings as s
from infrastructure.alarms import OperatorAlarms
from infrastructure.queue_consumer import QueueConsumerFunction
from infrastructure.queues import DeadLetteredQueue

STORAGE_EVENT_TYPES = ("Object Storage Class Changed", "Object Restore Completed", "Object Restore Expired")


class StorageTiers(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        bucket: s3.IBucket,
        layers: Sequence[lambda_.ILayerVersion],
        environment: Mapping[str, str],
        alarms: OperatorAlarms,
        restore_tier: str,
        restore_days: int,
    ) -> None:
        super().__init__(scope, construct_id)
        self.events_queue = DeadLetteredQueue(
            self,
            "EventsQueue",
            purpose="storage events",
            visibility_timeout=Duration.seconds(6 * s.STORAGE_EVENTS_FUNCTION_TIMEOUT.to_seconds()),
            max_receive_count=t.STORAGE_EVENTS_QUEUE.max_receive_count,
        )
        alarms.alarm_on_dead_letters(self.events_queue.dead_letter_queue, purpose="storage events")
        # EventBridge encrypts what it delivers with the queue's own key.
        self.events_queue.key.grant(
            iam.ServicePrincipal("events.amazonaws.com"), "kms:Decrypt", "kms:GenerateDataKey"
        )
        self.rule = events.Rule(
            self,
            "StorageEventsRule",
            description="The archive bucket's storage class changes and restores -> the index",
            event_pattern=events.EventPattern(
                source=["aws.s3"],
                detail_type=list(STORAGE_EVENT_TYPES),
                detail={"bucket": {"name": [bucket.bucket_name]}},
            ),
            targets=[targets.SqsQueue(self.events_queue.queue)],
        )
        self.restore_queue = DeadLetteredQueue(
            self,
            "RestoreQueue",
            purpose="study restore",
            visibility_timeout=Duration.seconds(6 * s.RESTORE_FUNCTION_TIMEOUT.to_seconds()),
            max_receive_count=t.RESTORE_QUEUE.max_receive_count,
        )
        alarms.alarm_on_dead_letters(self.restore_queue.dead_letter_queue, purpose="study restore")
        self.environment = {
            t.ENV_RESTORE_QUEUE_URL: self.restore_queue.queue.queue_url,
            t.ENV_RESTORE_TIER: restore_tier,
            t.ENV_RESTORE_DAYS: str(restore_days),
        }
        function_env = {**environment, **self.environment}
        self.events_consumer = QueueConsumerFunction(
            self,
            "StorageEvents",
            description="Marks instances NEARLINE/ONLINE from S3 storage class and restore events",
            code_dir=s.REPO_ROOT / t.STORAGE_EVENTS.code_dir,
            handler=t.STORAGE_EVENTS.handler,
            runtime=s.LAMBDA_RUNTIME,
            architecture=s.LAMBDA_ARCHITECTURE,
            layers=layers,
            environment={**function_env, **s.powertools_env("storage-events")},
            queue=self.events_queue.queue,
            batch_size=t.STORAGE_EVENTS.batch_size,
            timeout=s.STORAGE_EVENTS_FUNCTION_TIMEOUT,
            memory_size=s.TIER_FUNCTION_MEMORY_MB,
            log_retention=s.LOG_RETENTION,
        )
        self.restore_consumer = QueueConsumerFunction(
            self,
            "RestoreStudy",
            description="Restores a study's objects from Glacier/Deep Archive (RestoreObject per object)",
            code_dir=s.REPO_ROOT / t.RESTORE_STUDY.code_dir,
            handler=t.RESTORE_STUDY.handler,
            runtime=s.LAMBDA_RUNTIME,
            architecture=s.LAMBDA_ARCHITECTURE,
            layers=layers,
            environment={**function_env, **s.powertools_env("restore-study")},
            queue=self.restore_queue.queue,
            batch_size=t.RESTORE_STUDY.batch_size,
            timeout=s.RESTORE_FUNCTION_TIMEOUT,
            memory_size=s.TIER_FUNCTION_MEMORY_MB,
            log_retention=s.LOG_RETENTION,
        )

    def grant_request_restore(self, grantee: iam.IRole) -> None:
        """Queue study restores (the DICOM listener, RAD-69, operators)."""
        self.restore_queue.grant_send_messages(grantee)
