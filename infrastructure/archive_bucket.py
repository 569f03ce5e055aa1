"""The archive bucket: where the immutable DICOM objects live."""

from __future__ import annotations

from collections.abc import Sequence

from archive.data.objects import INSTANCE_PREFIX
from aws_cdk import CfnOutput, Duration, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_notifications as s3n
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infrastructure.nag import acknowledge, arn_reference
from infrastructure.settings import ObjectLockMode

# Reading an object and what S3 knows about it: HeadObject is authorised by s3:GetObject; the
# *Attributes actions return the stored checksums (GetObjectAttributes).
_READ_OBJECT_ACTIONS = (
    "s3:GetObject",
    "s3:GetObjectVersion",
    "s3:GetObjectAttributes",
    "s3:GetObjectVersionAttributes",
)
# PutObject also covers multipart create/upload/complete; aborting a failed multipart upload is
# separate. PutObjectRetention lets the PUT carry its retain-until date (docs/retention.md): under
# COMPLIANCE it can only lengthen a lock, and without s3:BypassGovernanceRetention not shorten a
# GOVERNANCE one. There is deliberately no delete action here; PutObjectLegalHold only with the
# condition that the hold is turned ON (an object stored into a held study is held from its PUT),
# so no writer can lift a legal hold.
# Smaller objects are not worth a transition (see the lifecycle rule).
TIER_MINIMUM_OBJECT_BYTES = 128 * 1024 - 1
_WRITE_OBJECT_ACTIONS = ("s3:PutObject", "s3:PutObjectRetention", "s3:AbortMultipartUpload")


class ArchiveBucket(Construct):
    """Versioned, Object-Locked, KMS-encrypted, TLS-only bucket with server access logs.

    The bucket is kept when the stack is deleted; objects cannot be deleted or overwritten before
    their default retention runs out (COMPLIANCE: not even by the account root).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        object_lock_mode: ObjectLockMode,
        retention_days: int,
        tiers: Sequence[tuple[s3.StorageClass, Duration]] = (),
    ) -> None:
        super().__init__(scope, construct_id)
        retention = Duration.days(retention_days)
        default_retention = (
            s3.ObjectLockRetention.compliance(retention)
            if object_lock_mode is ObjectLockMode.COMPLIANCE
            else s3.ObjectLockRetention.governance(retention)
        )

        self.key = kms.Key(
            self,
            "Key",
            description="Encrypts the DICOM objects of the imaging archive",
            enable_key_rotation=True,
            removal_policy=RemovalPolicy.RETAIN,
        )
        # Server access logs (and load balancer access logs) can only be delivered to SSE-S3
        # buckets, hence a separate bucket with S3-managed keys.
        self.access_logs_bucket = s3.Bucket(
            self,
            "AccessLogs",
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            enforce_ssl=True,
            versioned=True,
            removal_policy=RemovalPolicy.RETAIN,
        )
        acknowledge(
            self.access_logs_bucket,
            "AwsSolutions-S1",
            "This is the access log bucket itself; logging its own access into itself would loop.",
        )
        self.bucket = s3.Bucket(
            self,
            "Objects",
            versioned=True,
            object_lock_enabled=True,
            object_lock_default_retention=default_retention,
            encryption=s3.BucketEncryption.KMS,
            encryption_key=self.key,
            bucket_key_enabled=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            enforce_ssl=True,
            minimum_tls_version=1.2,
            server_access_logs_bucket=self.access_logs_bucket,
            server_access_logs_prefix="archive-bucket/",
            removal_policy=RemovalPolicy.RETAIN,
            # Storage class changes and restores reach the index through EventBridge
            # (infrastructure/storage_tiers.py); S3 sends no such events to SQS directly.
            event_bridge_enabled=True,
            lifecycle_rules=[
                # Instances move to colder classes as they age (docs/storage.md, "Tiers and
                # restores"); a transition keeps the version and its Object Lock. Objects under
                # 128 KB stay: Glacier classes bill them as 128 KB plus a per-object transition fee.
                s3.LifecycleRule(
                    id="instance-tiers",
                    prefix=INSTANCE_PREFIX,
                    object_size_greater_than=TIER_MINIMUM_OBJECT_BYTES,
                    transitions=[
                        s3.Transition(storage_class=storage_class, transition_after=after)
                        for storage_class, after in tiers
                    ],
                )
            ]
            if tiers
            else None,
        )
        CfnOutput(self, "BucketName", value=self.bucket.bucket_name, description="The archive bucket")

    def notify_object_created(self, queue: sqs.IQueue) -> None:
        """Send every ObjectCreated event to ``queue`` (S3 notification records in SQS messages)."""
        self.bucket.add_event_notification(
            s3.EventType.OBJECT_CREATED,
            s3n.SqsDestination(queue),
            s3.NotificationKeyFilter(prefix=INSTANCE_PREFIX),
        )
        # CDK implements bucket notifications with one stack-wide custom resource Lambda.
        stack = Stack.of(self)
        handler = stack.node.try_find_child("BucketNotificationsHandler050a0587b7544547bf325f094a3db834")
        if handler is not None:
            acknowledge(
                handler,
                "AwsSolutions-IAM4",
                "CDK's bucket-notification custom resource runs only during deploys and has just the "
                "basic execution role, to write its own logs.",
                findings=(
                    "Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
                ),
            )

    def grant_read_objects(self, grantee: iam.IRole) -> None:
        """Read stored objects, their versions and checksums; list, so a missing key is a 404."""
        iam.Grant.add_to_principal(
            grantee=grantee, actions=["s3:ListBucket"], resource_arns=[self.bucket.bucket_arn]
        )
        self._grant_objects(grantee, _READ_OBJECT_ACTIONS)
        self.key.grant_decrypt(grantee)
        acknowledge(
            grantee,
            "AwsSolutions-IAM5",
            "Objects are keyed by DICOM UIDs that are only known at run time, so object actions "
            "are granted on <archive bucket>/*, with explicit actions and no delete.",
            findings=(f"Resource::{arn_reference(self.bucket)}/*",),
        )

    def grant_read_write_objects(self, grantee: iam.IRole) -> None:
        """Read as above and put new objects (Object Lock refuses overwrites of locked versions)."""
        self.grant_read_objects(grantee)
        self._grant_objects(grantee, _WRITE_OBJECT_ACTIONS)
        self.grant_hold_on(grantee)
        self.key.grant_encrypt_decrypt(grantee)
        acknowledge(
            grantee,
            "AwsSolutions-IAM5",
            "CDK's encrypt/decrypt grant on the archive bucket's own key: the resource is that one "
            "key; the wildcards only cover variants of the same operation.",
            findings=("Action::kms:GenerateDataKey*", "Action::kms:ReEncrypt*"),
        )

    def grant_extend_retention(self, grantee: iam.IRole) -> None:
        """Read an object version's lock (HEAD) and lengthen it (PutObjectRetention: under
        COMPLIANCE S3 refuses any shortening, and without s3:BypassGovernanceRetention so under
        GOVERNANCE); no read of the content, no write, no delete (docs/retention.md)."""
        self._grant_objects(
            grantee, ("s3:GetObject", "s3:GetObjectVersion", "s3:GetObjectRetention", "s3:PutObjectRetention")
        )
        self.key.grant_decrypt(grantee)
        acknowledge(
            grantee,
            "AwsSolutions-IAM5",
            "Objects are keyed by DICOM UIDs that are only known at run time, so the retention "
            "actions are granted on <archive bucket>/*, with no write or delete.",
            findings=(f"Resource::{arn_reference(self.bucket)}/*",),
        )

    def grant_hold_on(self, grantee: iam.IRole) -> None:
        """PutObjectLegalHold only with the condition that the hold is turned ON: a writer (or the
        indexer, closing the listener's hold-cache window) may hold an object, never release it."""
        iam.Grant.add_to_principal(
            grantee=grantee,
            actions=["s3:PutObjectLegalHold"],
            resource_arns=[self.bucket.arn_for_objects("*")],
            conditions={"StringEquals": {"s3:object-lock-legal-hold": "ON"}},
        )

    def grant_restore_objects(self, grantee: iam.IRole) -> None:
        """RestoreObject (a readable copy of an archived version, docs/storage.md): nothing else."""
        self._grant_objects(grantee, ("s3:RestoreObject",))
        # S3 may use the object's key on the caller's behalf for a restore of an SSE-KMS object
        # (not verifiable in the local stand-in): decrypt only.
        self.key.grant_decrypt(grantee)
        acknowledge(
            grantee,
            "AwsSolutions-IAM5",
            "Objects are keyed by DICOM UIDs that are only known at run time, so RestoreObject is "
            "granted on <archive bucket>/*, with no read, write or delete.",
            findings=(f"Resource::{arn_reference(self.bucket)}/*",),
        )

    def _grant_objects(self, grantee: iam.IRole, actions: tuple[str, ...]) -> None:
        iam.Grant.add_to_principal(
            grantee=grantee,
            actions=list(actions),
            resource_arns=[self.bucket.arn_for_objects("*")],
        )
