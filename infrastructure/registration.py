"""Registration of committed studies: the registration queue (delayed messages, DLQ, alarm) and the
register_study Lambda that turns a study into an XDS-I.b manifest and registry entry."""

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


class StudyRegistration(Construct):
    """Queue + Lambda. Who asks for registrations (commitment worker, indexer, patient updates) is
    granted ``grant_request``; the Lambda re-queues a study itself while instances still arrive."""

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
            purpose="registration",
            visibility_timeout=Duration.seconds(6 * s.REGISTER_FUNCTION_TIMEOUT.to_seconds()),
            max_receive_count=s.REGISTER_MAX_RECEIVE_COUNT,
        )
        alarms.alarm_on_dead_letters(self.queue.dead_letter_queue, purpose="registration")
        self.consumer = QueueConsumerFunction(
            self,
            "RegisterStudy",
            description="Registers committed studies as XDS-I.b manifests and queues their IANs",
            code_dir=s.REGISTER_FUNCTION_DIR,
            handler=s.REGISTER_FUNCTION_HANDLER,
            runtime=s.LAMBDA_RUNTIME,
            architecture=s.LAMBDA_ARCHITECTURE,
            layers=layers,
            environment={
                **environment,
                **s.powertools_env("register-study"),
                t.ENV_REGISTRATION_QUEUE_URL: self.queue.queue.queue_url,
            },
            queue=self.queue.queue,
            batch_size=s.REGISTER_BATCH_SIZE,
            timeout=s.REGISTER_FUNCTION_TIMEOUT,
            memory_size=s.REGISTER_FUNCTION_MEMORY_MB,
            log_retention=s.LOG_RETENTION,
        )
        self.queue.queue.grant_send_messages(self.consumer.role)

    @property
    def environment(self) -> dict[str, str]:
        """What a component that asks for registrations needs in its environment."""
        return {t.ENV_REGISTRATION_QUEUE_URL: self.queue.queue.queue_url}

    def grant_request(self, grantee: iam.IGrantable) -> None:
        self.queue.queue.grant_send_messages(grantee)
