"""A Python Lambda behind API Gateway or a schedule: its own role and log group, JSON logs, X-Ray."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from infrastructure.nag import acknowledge
from infrastructure.settings import ASSET_EXCLUDES


class ArchiveFunction(Construct):
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
        timeout: Duration,
        memory_size: int,
        log_retention: logs.RetentionDays,
    ) -> None:
        super().__init__(scope, construct_id)
        self.role = iam.Role(
            self, "Role", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"), description=description
        )
        self.log_group = logs.LogGroup(
            self, "Logs", retention=log_retention, removal_policy=RemovalPolicy.RETAIN
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
        )
        acknowledge(
            self.role,
            "AwsSolutions-IAM5",
            "X-Ray's PutTraceSegments and PutTelemetryRecords have no resource-level permissions; "
            "the role may only send traces with them.",
            findings=("Resource::*",),
        )
        acknowledge(
            self.function,
            "AwsSolutions-L1",
            "The project targets Python 3.11 everywhere (listener image, deps layer wheels, "
            "local cloud); runtimes are upgraded together, not per function.",
        )
