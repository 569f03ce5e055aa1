"""Retention jobs on AWS: the retention queue (with its DLQ and alarm) and the extend_retention
Lambda that lengthens Object Locks page by page (docs/retention.md). The admin CLI (a grown rule,
an operator's death record) and the patient_update function (HL7 PID-29/30) queue the jobs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from archive import topology as t
from aws_cdk import Duration
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from infrastructure import settings as s
from infrastructure.alarms import OperatorAlarms
from infrastructure.queue_consumer import QueueConsumerFunction
from infrastructure.queues import DeadLetteredQueue


class RetentionJobs(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        layers: Sequence[lambda_.ILayerVersion],
        environment: Mapping[str, str],
        alarms: OperatorAlarms,
    ) -> None:
        super().__init__(scope, construct_id)
        self.queue = DeadLetteredQueue(
            self,
            "Queue",
            purpose="retention job",
            visibility_timeout=Duration.seconds(6 * s.RETENTION_JOB_FUNCTION_TIMEOUT.to_seconds()),
            max_receive_count=t.RETENTION_QUEUE.max_receive_count,
        )
        # A page that keeps failing stops its job (its continuation is never queued): page the operator.
        alarms.alarm_on_dead_letters(self.queue.dead_letter_queue, purpose="retention job")
        self.environment = {t.ENV_RETENTION_QUEUE_URL: self.queue.queue.queue_url}
        self.consumer = QueueConsumerFunction(
            self,
            "ExtendRetention",
            description="Retention jobs: lengthens studies' retention ends and objects' Object Locks, a page at a time",
            code_dir=s.REPO_ROOT / t.EXTEND_RETENTION.code_dir,
            handler=t.EXTEND_RETENTION.handler,
            runtime=s.LAMBDA_RUNTIME,
            architecture=s.LAMBDA_ARCHITECTURE,
            layers=layers,
            environment={**environment, **self.environment, **s.powertools_env("extend-retention")},
            queue=self.queue.queue,
            batch_size=t.EXTEND_RETENTION.batch_size,
            timeout=s.RETENTION_JOB_FUNCTION_TIMEOUT,
            memory_size=s.TIER_FUNCTION_MEMORY_MB,
            log_retention=s.LOG_RETENTION,
        )
        # Each page queues the next one.
        self.queue.grant_send_messages(self.consumer.role)

    def grant_start(self, grantee: iam.IRole) -> None:
        """Queue retention jobs (the patient_update function; operators use their own credentials)."""
        self.queue.grant_send_messages(grantee)
