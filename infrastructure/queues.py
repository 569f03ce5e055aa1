"""A work queue whose poison messages end up in a dead-letter queue instead of being lost."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infrastructure.nag import acknowledge
from infrastructure.settings import DLQ_RETENTION


class DeadLetteredQueue(Construct):
    """An encrypted, TLS-only SQS queue with a dead-letter queue after ``max_receive_count`` tries."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        purpose: str,
        visibility_timeout: Duration,
        max_receive_count: int,
        fifo: bool = False,
    ) -> None:
        super().__init__(scope, construct_id)
        # A customer managed key (not the aws/sqs managed key), so S3 can be allowed to encrypt
        # the event notifications it sends.
        self.key = kms.Key(
            self,
            "Key",
            description=f"Encrypts the {purpose} queue and its dead-letter queue",
            enable_key_rotation=True,
            removal_policy=RemovalPolicy.RETAIN,
        )
        # A FIFO queue (ordered per message group, deduplicated by the sender's id) needs a FIFO
        # dead-letter queue; None keeps a standard queue exactly as before.
        fifo_flag = True if fifo else None
        content_dedup = False if fifo else None
        self.dead_letter_queue = sqs.Queue(
            self,
            "DeadLetters",
            fifo=fifo_flag,
            content_based_deduplication=content_dedup,
            encryption=sqs.QueueEncryption.KMS,
            encryption_master_key=self.key,
            enforce_ssl=True,
            retention_period=DLQ_RETENTION,
        )
        self.queue = sqs.Queue(
            self,
            "Queue",
            fifo=fifo_flag,
            content_based_deduplication=content_dedup,
            encryption=sqs.QueueEncryption.KMS,
            encryption_master_key=self.key,
            enforce_ssl=True,
            visibility_timeout=visibility_timeout,
            retention_period=DLQ_RETENTION,
            dead_letter_queue=sqs.DeadLetterQueue(
                queue=self.dead_letter_queue, max_receive_count=max_receive_count
            ),
        )

    def grant_send_messages(self, grantee: iam.IRole) -> None:
        """Let ``grantee`` send to the queue (and encrypt with its key), nothing else."""
        self.queue.grant_send_messages(grantee)
        acknowledge(
            grantee,
            "AwsSolutions-IAM5",
            "CDK's grant to encrypt messages with the queue's own key: the resource is that one key; "
            "the wildcards only cover variants of the same operation.",
            findings=("Action::kms:GenerateDataKey*", "Action::kms:ReEncrypt*"),
        )
