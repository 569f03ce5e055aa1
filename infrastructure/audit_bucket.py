"""The audit bucket: the audit trail's batches and the disclosure log's anchors, Object-Locked."""

from __future__ import annotations

from aws_cdk import CfnOutput, Duration, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infrastructure.nag import acknowledge, arn_reference
from infrastructure.settings import ObjectLockMode

AUDIT_PREFIX = "audit/"
ANCHOR_PREFIX = "disclosure-anchors/"


class AuditBucket(Construct):
    """Versioned, Object-Locked (the stack's mode; retention of log data), KMS-encrypted, TLS-only.

    Writers may only create objects under their prefix; nothing may delete, overwrite a locked
    version or change retention, so neither the audit trail nor an anchor can be rewritten.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        object_lock_mode: ObjectLockMode,
        retention_days: int,
        access_logs_bucket: s3.IBucket,
    ) -> None:
        super().__init__(scope, construct_id)
        retention = Duration.days(retention_days)
        self.key = kms.Key(
            self,
            "Key",
            description="Encrypts the imaging archive's audit trail and disclosure-log anchors",
            enable_key_rotation=True,
            removal_policy=RemovalPolicy.RETAIN,
        )
        self.bucket = s3.Bucket(
            self,
            "Bucket",
            versioned=True,
            object_lock_enabled=True,
            object_lock_default_retention=(
                s3.ObjectLockRetention.compliance(retention)
                if object_lock_mode is ObjectLockMode.COMPLIANCE
                else s3.ObjectLockRetention.governance(retention)
            ),
            encryption=s3.BucketEncryption.KMS,
            encryption_key=self.key,
            bucket_key_enabled=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            enforce_ssl=True,
            minimum_tls_version=1.2,
            server_access_logs_bucket=access_logs_bucket,
            server_access_logs_prefix="audit-bucket/",
            removal_policy=RemovalPolicy.RETAIN,
        )
        CfnOutput(self, "BucketName", value=self.bucket.bucket_name, description="The audit bucket")

    def grant_write_audit(self, grantee: iam.IRole) -> None:
        """Create audit batches (nothing else: no read, no delete)."""
        self._grant(grantee, ["s3:PutObject"], AUDIT_PREFIX)
        self.key.grant_encrypt(grantee)
        self._acknowledge(grantee, AUDIT_PREFIX, ("Action::kms:GenerateDataKey*", "Action::kms:ReEncrypt*"))

    def grant_anchor(self, grantee: iam.IRole) -> None:
        """Create and read disclosure-log anchors (the anchoring job)."""
        self._grant(grantee, ["s3:PutObject", "s3:GetObject"], ANCHOR_PREFIX)
        self._grant_list(grantee, ANCHOR_PREFIX)
        self.key.grant_encrypt_decrypt(grantee)
        self._acknowledge(grantee, ANCHOR_PREFIX, ("Action::kms:GenerateDataKey*", "Action::kms:ReEncrypt*"))

    def grant_read_anchors(self, grantee: iam.IRole) -> None:
        """Read anchors (verification)."""
        self._grant(grantee, ["s3:GetObject"], ANCHOR_PREFIX)
        self._grant_list(grantee, ANCHOR_PREFIX)
        self.key.grant_decrypt(grantee)
        self._acknowledge(grantee, ANCHOR_PREFIX, ())

    def _grant(self, grantee: iam.IRole, actions: list[str], prefix: str) -> None:
        iam.Grant.add_to_principal(
            grantee=grantee, actions=actions, resource_arns=[self.bucket.arn_for_objects(f"{prefix}*")]
        )

    def _grant_list(self, grantee: iam.IRole, prefix: str) -> None:
        grantee.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["s3:ListBucket"],
                resources=[self.bucket.bucket_arn],
                conditions={"StringLike": {"s3:prefix": [f"{prefix}*"]}},
            )
        )

    def _acknowledge(self, grantee: iam.IRole, prefix: str, kms_findings: tuple[str, ...]) -> None:
        acknowledge(
            grantee,
            "AwsSolutions-IAM5",
            f"Audit objects are named by time and id, known only at run time, so writes are granted on "
            f"<audit bucket>/{prefix}* only; the KMS wildcards cover variants of one operation on the "
            "bucket's own key.",
            findings=(f"Resource::{arn_reference(self.bucket)}/{prefix}*", *kms_findings),
        )
