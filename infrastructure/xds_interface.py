"""The XDS interface on AWS: API Gateway (REST) with the registry and repository Lambdas for
``/xds/registry`` (ITI-18, ITI-42) and ``/xds/repository`` (ITI-43); RAD-69 runs elsewhere (the
streaming Fargate service, see the stack), because API Gateway and Lambda cap an answer's size.

Every refusal API Gateway itself gives (a body over its 10 MB, a request without Content-Type,
any other 4XX/5XX before the function runs) goes out as a SOAP 1.2 Fault, the same envelope the
functions and the local gateway send (``archive.xds.soap.fault_envelope``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from archive import topology as t
from archive.errors import MalformedXml, SoapFaultError, XmlTooLarge
from archive.xds.soap import fault_envelope, fault_for
from aws_cdk import CfnOutput, RemovalPolicy
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from infrastructure import settings as s
from infrastructure.api_function import ArchiveFunction
from infrastructure.nag import acknowledge

SOAP_CONTENT_TYPE = "application/soap+xml; charset=UTF-8"


def gateway_fault(error: SoapFaultError) -> str:
    """A SOAP Fault as an API Gateway response template: the envelope the code sends, its
    wsa:MessageID made unique per response from the request id (a UUID)."""
    text = fault_envelope(fault_for(error)).decode("utf-8")
    start = text.index("<a:MessageID>") + len("<a:MessageID>")
    end = text.index("</a:MessageID>")
    return text[:start] + "urn:uuid:$context.requestId" + text[end:]


class XdsApi(Construct):
    """REST API with ``POST /xds/registry`` and ``POST /xds/repository`` (Lambda proxy, binary
    bodies), access-logged and throttled; gateway refusals are SOAP Faults."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        layers: Sequence[lambda_.ILayerVersion],
        environment: Mapping[str, str],
        behind_mutual_tls_domain: bool = False,
    ) -> None:
        super().__init__(scope, construct_id)
        self.functions: dict[str, ArchiveFunction] = {}
        for spec in t.XDS_FUNCTIONS:
            self.functions[spec.path] = ArchiveFunction(
                self,
                spec.function.replace("_", "-").title().replace("-", ""),
                description=f"XDS {spec.path}: SOAP over API Gateway (see docs/conformance-xds.md)",
                code_dir=s.REPO_ROOT / spec.code_dir,
                handler=spec.handler,
                layers=layers,
                environment={
                    **environment,
                    **s.powertools_env(spec.function.replace("_", "-")),
                    t.ENV_XDS_MAX_LEAF_CLASS: str(s.XDS_MAX_LEAF_CLASS),
                },
                runtime=s.LAMBDA_RUNTIME,
                architecture=s.LAMBDA_ARCHITECTURE,
                timeout=s.XDS_FUNCTION_TIMEOUT,
                memory_size=s.XDS_FUNCTION_MEMORY_MB,
                log_retention=s.LOG_RETENTION,
            )
        access_logs = logs.LogGroup(
            self, "AccessLogs", retention=s.LOG_RETENTION, removal_policy=RemovalPolicy.RETAIN
        )
        self.api = apigw.RestApi(
            self,
            "Api",
            description="XDS.b / XDS-I.b registry and repository (SOAP 1.2, XUA in the message)",
            endpoint_types=[apigw.EndpointType.REGIONAL],
            # With a mutual-TLS custom domain (xdsDomainName) that domain is the only way in: the
            # default endpoint would take callers without a client certificate.
            disable_execute_api_endpoint=behind_mutual_tls_domain,
            # SOAP and MTOM bodies pass through as bytes (base64 in the proxy event) both ways.
            binary_media_types=["*/*"],
            cloud_watch_role=True,
            deploy_options=apigw.StageOptions(
                stage_name="xds",
                access_log_destination=apigw.LogGroupLogDestination(access_logs),
                access_log_format=apigw.AccessLogFormat.json_with_standard_fields(
                    caller=False,
                    http_method=True,
                    ip=True,
                    protocol=True,
                    request_time=True,
                    resource_path=True,
                    response_length=True,
                    status=True,
                    user=False,
                ),
                logging_level=apigw.MethodLoggingLevel.ERROR,
                # Bodies carry patient data: never written to the execution log.
                data_trace_enabled=False,
                tracing_enabled=True,
                throttling_rate_limit=s.XDS_API_RATE_LIMIT,
                throttling_burst_limit=s.XDS_API_BURST_LIMIT,
            ),
        )
        # The gateway checks that the Content-Type header is there; bodies have no API Gateway model
        # (SOAP and MTOM): the function's hardened parser validates them.
        validator = self.api.add_request_validator(
            "ContentTypeRequired", validate_request_parameters=True, validate_request_body=True
        )
        xds = self.api.root.add_resource("xds")
        for spec in t.XDS_FUNCTIONS:
            resource = xds.add_resource(spec.path.rsplit("/", 1)[1])
            resource.add_method(
                "POST",
                apigw.LambdaIntegration(self.functions[spec.path].function, proxy=True),
                request_parameters={"method.request.header.Content-Type": True},
                request_validator=validator,
            )
        for response_type, status, error in (
            (
                apigw.ResponseType.REQUEST_TOO_LARGE,
                "413",
                XmlTooLarge("request body over API Gateway's 10 MB"),
            ),
            (
                apigw.ResponseType.BAD_REQUEST_PARAMETERS,
                "400",
                MalformedXml("a SOAP request needs its Content-Type"),
            ),
            (apigw.ResponseType.DEFAULT_4_XX, None, MalformedXml("request refused by the gateway")),
            (apigw.ResponseType.DEFAULT_5_XX, None, SoapFaultError("the service is not available")),
        ):
            self.api.add_gateway_response(
                response_type.response_type,
                type=response_type,
                status_code=status,
                response_headers={"Content-Type": f"'{SOAP_CONTENT_TYPE}'"},
                templates={
                    content_type: gateway_fault(error)
                    for content_type in ("application/json", "application/soap+xml", "multipart/related")
                },
            )
        CfnOutput(self, "Endpoint", value=self.api.url, description="XDS base URL (append xds/registry, ...)")

        acknowledge(
            self.api,
            "AwsSolutions-APIG4",
            "Callers authenticate in the message: a signed SAML 2.0 assertion (XUA) in the SOAP "
            "header, verified by the function against the registered identity providers; API "
            "Gateway authorizers cannot check an XML signature.",
        )
        acknowledge(
            self.api,
            "AwsSolutions-COG4",
            "Callers are other care providers identified by XUA assertions of their identity "
            "providers, not users of a Cognito pool.",
        )
        acknowledge(
            self.api,
            "AwsSolutions-APIG3",
            "Every request must carry a signed assertion and is throttled at the stage; a WAF web "
            "ACL is the operator's choice per deployment (docs/deployment.md), not part of the stack.",
        )
        acknowledge(
            self.api,
            "AwsSolutions-IAM4",
            "API Gateway's account-level CloudWatch role needs AmazonAPIGatewayPushToCloudWatchLogs "
            "(attached by CDK) to write the execution and access logs; it grants nothing else.",
            findings=(
                "Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs",
            ),
        )

    @property
    def registry(self) -> ArchiveFunction:
        return self.functions[t.XDS_REGISTRY_PATH]

    @property
    def repository(self) -> ArchiveFunction:
        return self.functions[t.XDS_REPOSITORY_PATH]
