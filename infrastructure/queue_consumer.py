"""A Lambda function that works through an SQS queue (e.g. indexing each stored instance)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from aws_cdk import Duration, RemovalPolicy, Size
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as event_sources
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infrastructure.nag import acknowledge
from infrastructure.settings import ASSET_EXCLUDES


class QueueConsumerFunction(Construct):
    """A Python Lambda fed by an SQS queue, reporting partial batch failures.

    It has its own role (no managed policies): it may write to its own log group, send traces and
    consume its queue; everything else is granted by the stack.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        description: str,
        code_dir: Path,
        handler: str,
        runtime: lambda_.Runtime,
        architecture: lambda_.Architecture,
        layers: Sequence[lambda_.ILayerVersion],
        environment: Mapping[str, str],
        queue: sqs.IQueue,
        batch_size: int,
        timeout: Duration,
        memory_size: int,
        log_retention: logs.RetentionDays,
        vpc: ec2.IVpc | None = None,
        ephemeral_storage_gib: int | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=description,
        )
        self.log_group = logs.LogGroup(
            self,
            "Logs",
            retention=log_retention,
            removal_policy=RemovalPolicy.RETAIN,
        )
        self.log_group.grant_write(self.role)
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
            log_group=self.log_group,
            logging_format=lambda_.LoggingFormat.JSON,
            tracing=lambda_.Tracing.ACTIVE,
            timeout=timeout,
            memory_size=memory_size,
            ephemeral_storage_size=Size.gibibytes(ephemeral_storage_gib) if ephemeral_storage_gib else None,
            # In the VPC's private subnets when it must reach customers' nodes (their DICOM SCPs).
            vpc=vpc,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS) if vpc else None,
        )
        self.function.add_event_source(
            event_sources.SqsEventSource(
                queue,
                batch_size=batch_size,
                report_batch_item_failures=True,
            )
        )
        acknowledge(
            self.role,
            "AwsSolutions-IAM5",
            "X-Ray's PutTraceSegments and PutTelemetryRecords have no resource-level permissions; "
            "the role may only send traces with them.",
            findings=("Resource::*",),
        )
        if vpc is not None:
            acknowledge(
                self.role,
                "AwsSolutions-IAM4",
                "A Lambda function in a VPC needs AWSLambdaVPCAccessExecutionRole (CDK attaches it) to "
                "create and delete its network interfaces; it grants nothing else.",
                findings=(
                    "Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole",
                ),
            )
        acknowledge(
            self.function,
            "AwsSolutions-L1",
            "The project targets Python 3.11 everywhere (listener image, deps layer wheels, "
            "local cloud); runtimes are upgraded together, not per function.",
        )
