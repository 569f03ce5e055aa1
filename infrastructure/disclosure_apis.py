"""The HTTP APIs of the disclosure log.

- ``CustomerApi``: the customers' side (the XDS API's custom domain): mutual TLS with a truststore
  of customer CAs, so only a client certificate from a trusted CA gets in; the execute-api endpoint
  is switched off, so the domain is the only way in. POST /disclosures/notifications.
- ``AdminApi``: operators and supervisors, IAM-authorised (SigV4): the per-patient disclosure
  report (JSON, CSV) and the chain verification.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from aws_cdk import CfnOutput, RemovalPolicy, Stack
from aws_cdk import aws_apigateway as apigateway
from aws_cdk import aws_certificatemanager as acm
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_deployment as s3deploy
from constructs import Construct

from infrastructure.nag import acknowledge, arn_reference


def _acknowledge_bucket_deployment(scope: Construct, destination: s3.IBucket) -> None:
    """cdk-nag findings of CDK's BucketDeployment handler (one singleton Lambda per stack)."""
    stack = Stack.of(scope)
    why = (
        "CDK's BucketDeployment handler runs only at deploy time to copy the customers' CA bundle "
        "from the CDK asset bucket into the truststore bucket; its role and grants are aws-cdk-lib's, "
        "scoped to those two buckets"
    )
    for handler in [c for c in stack.node.children if c.node.id.startswith("Custom::CDKBucketDeployment")]:
        acknowledge(
            handler,
            "AwsSolutions-IAM4",
            why,
            findings=(
                "Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
            ),
        )
        acknowledge(
            handler,
            "AwsSolutions-IAM5",
            why,
            findings=(
                "Action::s3:GetBucket*",
                "Action::s3:GetObject*",
                "Action::s3:List*",
                "Action::s3:Abort*",
                "Action::s3:DeleteObject*",
                f"Resource::arn:aws:s3:::cdk-hnb659fds-assets-<AWS::AccountId>-{stack.region}/*",
                f"Resource::{arn_reference(destination)}/*",
            ),
        )
        acknowledge(
            handler,
            "AwsSolutions-L1",
            "The runtime of CDK's BucketDeployment handler is chosen by aws-cdk-lib and moves with it",
        )


def truststore_bundle(path: str | None) -> str | None:
    """The customers' CA bundle (PEM) to deploy as the mutual-TLS truststore, read at synth."""
    if path is None:
        return None
    text = Path(path).read_text(encoding="ascii")
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise ValueError(f"{path}: not a PEM bundle of CA certificates")
    return text


NOTIFICATION_SCHEMA = apigateway.JsonSchema(
    schema=apigateway.JsonSchemaVersion.DRAFT4,
    type=apigateway.JsonSchemaType.OBJECT,
    required=[
        "notification_id",
        "patient",
        "studies",
        "recipient",
        "purpose_of_use",
        "channel",
        "disclosed_at",
    ],
    properties={
        "notification_id": apigateway.JsonSchema(type=apigateway.JsonSchemaType.STRING, max_length=256),
        "patient": apigateway.JsonSchema(type=apigateway.JsonSchemaType.OBJECT, required=["id", "issuer"]),
        "studies": apigateway.JsonSchema(type=apigateway.JsonSchemaType.ARRAY, min_items=1, max_items=1000),
        "recipient": apigateway.JsonSchema(type=apigateway.JsonSchemaType.OBJECT),
        "purpose_of_use": apigateway.JsonSchema(type=apigateway.JsonSchemaType.STRING, max_length=256),
        "channel": apigateway.JsonSchema(type=apigateway.JsonSchemaType.STRING, max_length=256),
        "disclosed_at": apigateway.JsonSchema(type=apigateway.JsonSchemaType.STRING, max_length=64),
    },
)


def _stage_options(scope: Construct, log_retention: logs.RetentionDays) -> apigateway.StageOptions:
    access_logs = logs.LogGroup(
        scope, "AccessLogs", retention=log_retention, removal_policy=RemovalPolicy.RETAIN
    )
    return apigateway.StageOptions(
        stage_name="v1",
        access_log_destination=apigateway.LogGroupLogDestination(access_logs),
        access_log_format=apigateway.AccessLogFormat.json_with_standard_fields(
            caller=True,
            http_method=True,
            ip=True,
            protocol=True,
            request_time=True,
            resource_path=True,
            response_length=True,
            status=True,
            user=True,
        ),
        logging_level=apigateway.MethodLoggingLevel.ERROR,
        data_trace_enabled=False,  # bodies carry patient data: never into execution logs
        tracing_enabled=True,
    )


def _acknowledge_common(api: apigateway.RestApi, *, why_no_waf: str) -> None:
    acknowledge(api, "AwsSolutions-APIG3", why_no_waf)
    acknowledge(
        api,
        "AwsSolutions-COG4",
        "Callers are organisations' systems and operators, not end users: the customer API "
        "authenticates by mutual TLS, the admin API by IAM (SigV4); there is no Cognito user pool.",
    )
    role = api.node.try_find_child("CloudWatchRole")
    if role is not None:
        acknowledge(
            role,
            "AwsSolutions-IAM4",
            "API Gateway's account-level role for writing execution logs to CloudWatch uses the AWS "
            "managed policy made for exactly that (AmazonAPIGatewayPushToCloudWatchLogs).",
            findings=(
                "Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs",
            ),
        )


class AdminApi(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        function: lambda_.IFunction,
        log_retention: logs.RetentionDays,
    ) -> None:
        super().__init__(scope, construct_id)
        self.api = apigateway.RestApi(
            self,
            "Api",
            description="Imaging archive admin API (IAM): disclosure reports and chain verification",
            endpoint_types=[apigateway.EndpointType.REGIONAL],
            cloud_watch_role=True,
            cloud_watch_role_removal_policy=RemovalPolicy.DESTROY,
            deploy_options=_stage_options(self, log_retention),
        )
        validator = self.api.add_request_validator(
            "Request", validate_request_parameters=True, validate_request_body=True
        )
        integration = apigateway.LambdaIntegration(function)
        params = {"method.request.querystring.patient_id": True, "method.request.querystring.issuer": True}
        disclosures = self.api.root.add_resource("admin").add_resource("disclosures")
        for resource in (disclosures, disclosures.add_resource("verify")):
            resource.add_method(
                "GET",
                integration,
                authorization_type=apigateway.AuthorizationType.IAM,
                request_validator=validator,
                request_parameters=params,
            )
        _acknowledge_common(
            self.api,
            why_no_waf="The admin API takes only IAM-signed requests from the operator's own principals; "
            "a WAF in front of it would filter nothing that IAM does not already refuse.",
        )
        CfnOutput(self, "Url", value=self.api.url, description="Admin API (SigV4): /admin/disclosures")


class CustomerApi(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        notification_function: lambda_.IFunction,
        domain_name: str,
        certificate_arn: str,
        truststore_version: str | None,
        truststore_key: str,
        truststore_pem: str | None = None,
        access_logs_bucket: s3.IBucket,
        log_retention: logs.RetentionDays,
    ) -> None:
        super().__init__(scope, construct_id)
        # The customers' CAs, as API Gateway's mutual TLS reads them (one PEM bundle, versioned).
        self.truststore = s3.Bucket(
            self,
            "Truststore",
            versioned=True,
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            enforce_ssl=True,
            server_access_logs_bucket=access_logs_bucket,
            server_access_logs_prefix="truststore/",
            removal_policy=RemovalPolicy.RETAIN,
        )
        self.api = apigateway.RestApi(
            self,
            "Api",
            description="Imaging archive customer API (mutual TLS): disclosure notifications",
            endpoint_types=[apigateway.EndpointType.REGIONAL],
            disable_execute_api_endpoint=True,  # only the mutual-TLS custom domain reaches it
            cloud_watch_role=True,
            cloud_watch_role_removal_policy=RemovalPolicy.DESTROY,
            deploy_options=_stage_options(self, log_retention),
        )
        model = self.api.add_model(
            "Notification", content_type="application/json", schema=NOTIFICATION_SCHEMA
        )
        validator = self.api.add_request_validator(
            "Request", validate_request_body=True, validate_request_parameters=True
        )
        notifications = self.api.root.add_resource("disclosures").add_resource("notifications")
        method = notifications.add_method(
            "POST",
            apigateway.LambdaIntegration(notification_function),
            request_validator=validator,
            request_models={"application/json": model},
        )
        acknowledge(
            method,
            "AwsSolutions-APIG4",
            "Callers authenticate with their organisation's client certificate (mutual TLS on the "
            "custom domain, the only endpoint); the function binds that certificate to the "
            "organisation it names before anything is recorded.",
        )
        self.truststore_deployment: s3deploy.BucketDeployment | None = None
        if truststore_pem is not None:
            # The bundle is deployed by CDK under a name derived from its content: a changed bundle
            # is a new key, so CloudFormation updates the domain and API Gateway reads it again
            # (it reads a truststore only when the domain changes). Old bundles stay (versioned).
            truststore_key = f"truststore-{hashlib.sha256(truststore_pem.encode()).hexdigest()[:16]}.pem"
            truststore_version = None
            self.truststore_deployment = s3deploy.BucketDeployment(
                self,
                "TruststoreDeployment",
                sources=[s3deploy.Source.data(truststore_key, truststore_pem)],
                destination_bucket=self.truststore,
                prune=False,
                retain_on_delete=True,
            )
        self.truststore_key = truststore_key
        self.domain = apigateway.DomainName(
            self,
            "Domain",
            domain_name=domain_name,
            certificate=acm.Certificate.from_certificate_arn(self, "Certificate", certificate_arn),
            endpoint_type=apigateway.EndpointType.REGIONAL,
            security_policy=apigateway.SecurityPolicy.TLS_1_2,
            mtls=apigateway.MTLSConfig(
                bucket=self.truststore, key=truststore_key, version=truststore_version
            ),
        )
        if self.truststore_deployment is not None:
            self.domain.node.add_dependency(self.truststore_deployment)
            _acknowledge_bucket_deployment(self, self.truststore)
        self.domain.add_base_path_mapping(self.api, stage=self.api.deployment_stage)
        _acknowledge_common(
            self.api,
            why_no_waf="Only clients with a certificate from a customer CA in the truststore complete the "
            "TLS handshake; the request body is validated against a schema before the function runs.",
        )
        CfnOutput(
            self,
            "DomainTarget",
            value=self.domain.domain_name_alias_domain_name,
            description=f"Point {domain_name} (CNAME/alias) here",
        )
        CfnOutput(
            self,
            "TruststoreBucket",
            value=self.truststore.bucket_name,
            description=f"The customers' CA bundle: {truststore_key}"
            + ("" if truststore_pem else " (upload it before the first deploy)"),
        )
