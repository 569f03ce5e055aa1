"""Confirmation of registration: the IAN queue (one message per notification, exponential backoff by
visibility, dead-letter queue after the configured attempts, alarm) and the send_ian Lambda in the
VPC, from where customers' DICOM nodes are reached."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from archive import topology as t
from aws_cdk import CfnOutput, Duration
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from infrastructure import settings as s
from infrastructure.alarms import OperatorAlarms
from infrastructure.queue_consumer import QueueConsumerFunction
from infrastructure.queues import DeadLetteredQueue


class AvailabilityNotifications(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        layers: Sequence[lambda_.ILayerVersion],
        environment: Mapping[str, str],
        alarms: OperatorAlarms,
        vpc: ec2.IVpc,
    ) -> None:
        super().__init__(scope, construct_id)
        # maxReceiveCount is the number of attempts: the handler counts them by the receive count.
        self.queue = DeadLetteredQueue(
            self,
            "Queue",
            purpose="IAN",
            visibility_timeout=Duration.seconds(6 * s.IAN_FUNCTION_TIMEOUT.to_seconds()),
            max_receive_count=s.IAN_MAX_ATTEMPTS,
        )
        self.dead_letter_alarm = alarms.alarm_on_dead_letters(self.queue.dead_letter_queue, purpose="IAN")
        self.environment = {
            t.ENV_IAN_QUEUE_URL: self.queue.queue.queue_url,
            t.ENV_IAN_RETRY_BASE: str(s.IAN_RETRY_BASE_SECONDS),
            t.ENV_IAN_MAX_ATTEMPTS: str(s.IAN_MAX_ATTEMPTS),
            t.ENV_IAN_TIMEOUT: str(s.IAN_TIMEOUT_SECONDS),
        }
        CfnOutput(
            self,
            "IanQueueUrl",
            value=self.queue.queue.queue_url,
            description=f"{t.ENV_IAN_QUEUE_URL} for the operator's `python -m admin ian resend`",
        )
        self.consumer = QueueConsumerFunction(
            self,
            "SendIan",
            description="Delivers Instance Availability Notifications (N-CREATE) to customers' AEs",
            code_dir=s.IAN_FUNCTION_DIR,
            handler=s.IAN_FUNCTION_HANDLER,
            runtime=s.LAMBDA_RUNTIME,
            architecture=s.LAMBDA_ARCHITECTURE,
            layers=layers,
            environment={**environment, **s.powertools_env("send-ian"), **self.environment},
            queue=self.queue.queue,
            batch_size=s.IAN_BATCH_SIZE,
            timeout=s.IAN_FUNCTION_TIMEOUT,
            memory_size=s.IAN_FUNCTION_MEMORY_MB,
            log_retention=s.LOG_RETENTION,
            vpc=vpc,
        )

    def grant_send(self, grantee: iam.IGrantable) -> None:
        """Queue notifications (the register Lambda; operators resending)."""
        self.queue.queue.grant_send_messages(grantee)
