"""Lawful destruction on AWS: the destroy_expired Lambda, run daily by EventBridge Scheduler,
with an alarm when a run fails (docs/retention.md)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_scheduler as scheduler
from constructs import Construct

from infrastructure.nag import acknowledge, arn_reference
from infrastructure.settings import ASSET_EXCLUDES

# Deleting versions whose lock has expired; never s3:BypassGovernanceRetention. Reading a version's
# lock and legal hold (HeadObject returns them only with the two Get actions) lets the job check
# every version of a study before it deletes any, so that a refusal leaves the study whole.
_DESTROY_OBJECT_ACTIONS = (
    "s3:DeleteObjectVersion",
    "s3:DeleteObject",
    "s3:GetObject",
    "s3:GetObjectVersion",
    "s3:GetObjectRetention",
    "s3:GetObjectLegalHold",
)


class DestructionSchedule(Construct):
    """The scheduled destruction function, its schedule and its failure alarm."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        code_dir: Path,
        handler: str,
        schedule: str,
        runtime: lambda_.Runtime,
        architecture: lambda_.Architecture,
        layers: Sequence[lambda_.ILayerVersion],
        environment: Mapping[str, str],
        bucket: s3.IBucket,
        log_retention: logs.RetentionDays,
    ) -> None:
        super().__init__(scope, construct_id)
        description = "Destroys studies whose retention has ended (daily)"
        self.role = iam.Role(self, "Role", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"))
        log_group = logs.LogGroup(self, "Logs", retention=log_retention, removal_policy=RemovalPolicy.RETAIN)
        log_group.grant_write(self.role)
        self.function = lambda_.Function(
            self,
            "Function",
            description=description,
            runtime=runtime,
            architecture=architecture,
            handler=handler,
            code=lambda_.Code.from_asset(str(code_dir), exclude=list(ASSET_EXCLUDES)),
            layers=list(layers),
            environment=dict(environment),
            role=self.role,
            log_group=log_group,
            logging_format=lambda_.LoggingFormat.JSON,
            timeout=Duration.minutes(15),
            memory_size=512,
            # One run at a time: two runs would race on the same due studies.
            reserved_concurrent_executions=1,
        )
        iam.Grant.add_to_principal(
            grantee=self.role,
            actions=["s3:ListBucketVersions", "s3:ListBucket"],
            resource_arns=[bucket.bucket_arn],
        )
        iam.Grant.add_to_principal(
            grantee=self.role,
            actions=list(_DESTROY_OBJECT_ACTIONS),
            resource_arns=[bucket.arn_for_objects("*")],
        )
        invoker = iam.Role(self, "SchedulerRole", assumed_by=iam.ServicePrincipal("scheduler.amazonaws.com"))
        self.function.grant_invoke(invoker)
        self.schedule = scheduler.CfnSchedule(
            self,
            "Schedule",
            description=description,
            schedule_expression=schedule,
            schedule_expression_timezone="UTC",
            flexible_time_window=scheduler.CfnSchedule.FlexibleTimeWindowProperty(mode="OFF"),
            target=scheduler.CfnSchedule.TargetProperty(
                arn=self.function.function_arn,
                role_arn=invoker.role_arn,
                input="{}",
                retry_policy=scheduler.CfnSchedule.RetryPolicyProperty(maximum_retry_attempts=2),
            ),
        )
        self.failures = cloudwatch.Alarm(
            self,
            "Failures",
            alarm_description="The destruction job failed; due studies are kept until it succeeds",
            metric=self.function.metric_errors(period=Duration.hours(1), statistic=cloudwatch.Stats.SUM),
            threshold=0,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=1,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        acknowledge(
            self.role,
            "AwsSolutions-IAM5",
            "Objects are keyed by DICOM UIDs known only at run time, so object actions are granted "
            "on <archive bucket>/*; S3 Object Lock still refuses any version before its time.",
            findings=(f"Resource::{arn_reference(bucket)}/*",),
        )
        acknowledge(
            invoker,
            "AwsSolutions-IAM5",
            "CDK's invoke grant covers the function and its versions (<function ARN>:*); the "
            "scheduler role may invoke this one function only.",
            findings=(f"Resource::{arn_reference(self.function)}:*",),
        )
        acknowledge(
            self.function,
            "AwsSolutions-L1",
            "The project targets Python 3.11 everywhere; runtimes are upgraded together.",
        )
