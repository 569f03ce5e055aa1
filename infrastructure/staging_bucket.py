"""The staging tier: an S3 Express One Zone directory bucket where the DICOM listener lands each
received object before acknowledging it (docs/storage.md, "Two tiers")."""

from __future__ import annotations

from archive.data.objects import INSTANCE_PREFIX
from aws_cdk import CfnOutput
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3express as s3express
from constructs import Construct


class StagingBucket(Construct):
    """Single-AZ, single-digit-millisecond landing tier; not versioned, not locked (directory
    buckets have neither): the Object-Locked archive bucket stays the only place of record.

    A staged copy is deleted by the indexer once its locked copy is indexed; the lifecycle rule
    only expires what nobody released (a copy given up after every retry, already alarmed).
    """

    def __init__(self, scope: Construct, construct_id: str, *, zone_id: str, expire_after_days: int) -> None:
        super().__init__(scope, construct_id)
        self.bucket = s3express.CfnDirectoryBucket(
            self,
            "Bucket",
            data_redundancy="SingleAvailabilityZone",
            location_name=zone_id,
            # SSE-S3 (AES-256), the directory bucket default, stated so a template review sees it.
            bucket_encryption=s3express.CfnDirectoryBucket.BucketEncryptionProperty(
                server_side_encryption_configuration=[
                    s3express.CfnDirectoryBucket.ServerSideEncryptionRuleProperty(
                        server_side_encryption_by_default=s3express.CfnDirectoryBucket.ServerSideEncryptionByDefaultProperty(
                            sse_algorithm="AES256"
                        )
                    )
                ]
            ),
            lifecycle_configuration=s3express.CfnDirectoryBucket.LifecycleConfigurationProperty(
                rules=[
                    s3express.CfnDirectoryBucket.RuleProperty(
                        id="expire-unreleased-staged-copies",
                        status="Enabled",
                        prefix=INSTANCE_PREFIX,
                        expiration_in_days=expire_after_days,
                        abort_incomplete_multipart_upload=s3express.CfnDirectoryBucket.AbortIncompleteMultipartUploadProperty(
                            days_after_initiation=1
                        ),
                    )
                ]
            ),
        )
        self.bucket_name = self.bucket.ref
        CfnOutput(self, "BucketName", value=self.bucket_name, description="The staging tier")

    def grant_session(self, grantee: iam.IRole) -> None:
        """Access to a directory bucket is by session (s3express:CreateSession on the bucket); the
        SDK asks for ReadWrite sessions, so reading, writing and deleting are one grant."""
        iam.Grant.add_to_principal(
            grantee=grantee, actions=["s3express:CreateSession"], resource_arns=[self.bucket.attr_arn]
        )
