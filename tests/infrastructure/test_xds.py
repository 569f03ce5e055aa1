"""The XDS interface on AWS: API Gateway (REST) with the registry and repository Lambdas, gateway
refusals as SOAP Faults, and the RAD-69 streaming service on Fargate behind its load balancer."""

from __future__ import annotations

from typing import Any

from archive import topology as t
from archive.topology import TABLE_ENV
from aws_cdk.assertions import Match
from lxml import etree

from infrastructure import settings as s
from tests.infrastructure.conftest import Synthesized
from tests.infrastructure.template_queries import (
    actions_on,
    arn_of,
    objects_of,
    objects_under,
    only,
    ref,
    resources,
    statements_of_role,
)

SOAP = "http://www.w3.org/2003/05/soap-envelope"


def _function(synthesized: Synthesized, service: str) -> tuple[str, dict[str, Any]]:
    env = Match.object_like({"Variables": Match.object_like({"POWERTOOLS_SERVICE_NAME": service})})
    return only(synthesized.template, "AWS::Lambda::Function", Match.object_like({"Environment": env}))


def _xds_api(synthesized: Synthesized) -> tuple[str, dict[str, Any]]:
    """The XDS REST API (the stack has others: the admin and customers' APIs)."""
    return only(
        synthesized.template,
        "AWS::ApiGateway::RestApi",
        Match.object_like({"Description": Match.string_like_regexp("XDS")}),
    )


def _post_method_of(synthesized: Synthesized, path: str) -> dict[str, Any]:
    """The POST method on /xds/<name> of the XDS API, found through its resources' path parts."""
    api_id, _ = _xds_api(synthesized)
    parent, leaf = path.strip("/").split("/")
    (parent_id,) = resources(
        synthesized.template,
        "AWS::ApiGateway::Resource",
        Match.object_like({"PathPart": parent, "RestApiId": ref(api_id)}),
    )
    (leaf_id,) = resources(
        synthesized.template,
        "AWS::ApiGateway::Resource",
        Match.object_like({"PathPart": leaf, "ParentId": ref(parent_id)}),
    )
    _, method = only(
        synthesized.template,
        "AWS::ApiGateway::Method",
        Match.object_like({"HttpMethod": "POST", "ResourceId": ref(leaf_id)}),
    )
    return method


def test_registry_and_repository_are_lambda_proxies_behind_api_gateway(production: Synthesized) -> None:
    for spec, service in ((t.XDS_REGISTRY, "xds-registry"), (t.XDS_REPOSITORY, "xds-repository")):
        function_id, function = _function(production, service)
        props = function["Properties"]
        assert props["Handler"] == spec.handler
        # API Gateway gives up on an integration after 29 s: the function must end before it
        assert props["Timeout"] <= 29
        variables = props["Environment"]["Variables"]
        assert set(TABLE_ENV.values()) <= set(variables)
        assert variables[t.ENV_XDS_MAX_LEAF_CLASS] == str(s.XDS_MAX_LEAF_CLASS)
        method = _post_method_of(production, spec.path)
        integration = method["Properties"]["Integration"]
        assert integration["Type"] == "AWS_PROXY"
        assert function_id in str(integration["Uri"])
        # requests without a Content-Type are refused by the gateway's validator
        assert method["Properties"]["RequestParameters"] == {"method.request.header.Content-Type": True}
        assert "RequestValidatorId" in method["Properties"]
    # SOAP and MTOM bodies pass as bytes both ways
    _, api = _xds_api(production)
    assert api["Properties"]["BinaryMediaTypes"] == ["*/*"]


def test_functions_may_read_and_write_the_tables_and_the_repository_read_manifests(
    production: Synthesized,
) -> None:
    _, registry = _function(production, "xds-registry")
    _, repository = _function(production, "xds-repository")
    table_id = registry["Properties"]["Environment"]["Variables"][TABLE_ENV["xds_registry"]]["Ref"]
    log_table = registry["Properties"]["Environment"]["Variables"][TABLE_ENV["access_log"]]["Ref"]
    bucket = repository["Properties"]["Environment"]["Variables"][t.ENV_BUCKET]["Ref"]
    for function in (registry, repository):
        statements = statements_of_role(production.template, function["Properties"]["Role"]["Fn::GetAtt"][0])
        assert "dynamodb:Query" in actions_on(statements, arn_of(table_id))
        assert "dynamodb:PutItem" in actions_on(statements, arn_of(log_table))  # the disclosure log
    # ITI-42 writes the registry; ITI-43 only reads it (exact grants: test_least_privilege.py)
    registry_statements = statements_of_role(
        production.template, registry["Properties"]["Role"]["Fn::GetAtt"][0]
    )
    assert "dynamodb:PutItem" in actions_on(registry_statements, arn_of(table_id))
    statements = statements_of_role(production.template, repository["Properties"]["Role"]["Fn::GetAtt"][0])
    assert "s3:GetObject" in actions_on(statements, objects_of(bucket))
    assert "s3:PutObject" not in actions_on(statements, objects_of(bucket))
    assert "dynamodb:PutItem" not in actions_on(statements, arn_of(table_id))


def test_gateway_refusals_are_soap_faults(production: Synthesized) -> None:
    api_id, _ = _xds_api(production)
    responses = resources(
        production.template, "AWS::ApiGateway::GatewayResponse", Match.object_like({"RestApiId": ref(api_id)})
    )
    by_type = {r["Properties"]["ResponseType"]: r["Properties"] for r in responses.values()}
    assert {"REQUEST_TOO_LARGE", "BAD_REQUEST_PARAMETERS", "DEFAULT_4XX", "DEFAULT_5XX"} <= set(by_type)
    too_large = by_type["REQUEST_TOO_LARGE"]
    assert too_large["StatusCode"] == "413"
    assert too_large["ResponseParameters"]["gatewayresponse.header.Content-Type"].startswith(
        "'application/soap+xml"
    )
    for response_type, code in (("REQUEST_TOO_LARGE", "Sender"), ("DEFAULT_5XX", "Receiver")):
        templates = by_type[response_type]["ResponseTemplates"]
        assert {"application/json", "application/soap+xml"} <= set(templates)
        for template in templates.values():
            envelope = etree.fromstring(template.encode())
            fault = envelope.find(f"{{{SOAP}}}Body/{{{SOAP}}}Fault")
            assert fault is not None
            assert fault.findtext(f"{{{SOAP}}}Code/{{{SOAP}}}Value") == f"s:{code}"
            # each response gets its own wsa:MessageID, from API Gateway's request id
            assert "$context.requestId" in template


def test_stage_is_access_logged_traced_and_throttled(production: Synthesized) -> None:
    api_id, _ = _xds_api(production)
    _, stage = only(
        production.template, "AWS::ApiGateway::Stage", Match.object_like({"RestApiId": ref(api_id)})
    )
    props = stage["Properties"]
    assert "DestinationArn" in props["AccessLogSetting"]
    assert props["TracingEnabled"] is True
    (settings,) = props["MethodSettings"]
    assert settings["DataTraceEnabled"] is False  # bodies carry patient data
    assert settings["ThrottlingRateLimit"] == s.XDS_API_RATE_LIMIT
    assert settings["ThrottlingBurstLimit"] == s.XDS_API_BURST_LIMIT


def _imaging_task(synthesized: Synthesized) -> tuple[str, dict[str, Any]]:
    container = Match.object_like(
        {"PortMappings": [Match.object_like({"ContainerPort": s.XDS_IMAGING_CONTAINER_PORT})]}
    )
    return only(
        synthesized.template,
        "AWS::ECS::TaskDefinition",
        Match.object_like({"ContainerDefinitions": [container]}),
    )


def test_rad69_streams_from_fargate_reading_objects_and_logging_disclosures(production: Synthesized) -> None:
    task_id, task = _imaging_task(production)
    (container,) = task["Properties"]["ContainerDefinitions"]
    env = {e["Name"]: e["Value"] for e in container["Environment"]}
    assert env[t.ENV_XDS_PORT] == str(s.XDS_IMAGING_CONTAINER_PORT)
    assert set(TABLE_ENV.values()) <= set(env)
    assert int(task["Properties"]["Memory"]) == s.XDS_IMAGING_SIZING.memory_limit_mib
    statements = statements_of_role(production.template, task["Properties"]["TaskRoleArn"]["Fn::GetAtt"][0])
    bucket = env[t.ENV_BUCKET]["Ref"]
    assert "s3:GetObject" in actions_on(statements, objects_of(bucket))
    assert "s3:PutObject" not in actions_on(statements, objects_of(bucket))
    assert "dynamodb:PutItem" in actions_on(statements, arn_of(env[TABLE_ENV["access_log"]]["Ref"]))
    # The service runs behind a load balancer that forwards to the container port
    (service_id,) = resources(
        production.template, "AWS::ECS::Service", Match.object_like({"TaskDefinition": ref(task_id)})
    )
    service = resources(production.template, "AWS::ECS::Service")[service_id]
    (balancer,) = service["Properties"]["LoadBalancers"]
    assert balancer["ContainerPort"] == s.XDS_IMAGING_CONTAINER_PORT


def _imaging_balancer(
    synthesized: Synthesized, task_id: str
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(target group, listener, load balancer) of the RAD-69 service."""
    service = next(
        iter(
            resources(
                synthesized.template, "AWS::ECS::Service", Match.object_like({"TaskDefinition": ref(task_id)})
            ).values()
        )
    )
    (binding,) = service["Properties"]["LoadBalancers"]
    group = resources(synthesized.template, "AWS::ElasticLoadBalancingV2::TargetGroup")[
        binding["TargetGroupArn"]["Ref"]
    ]
    (listener,) = resources(
        synthesized.template,
        "AWS::ElasticLoadBalancingV2::Listener",
        Match.object_like(
            {"DefaultActions": [Match.object_like({"TargetGroupArn": binding["TargetGroupArn"]})]}
        ),
    ).values()
    balancer = resources(synthesized.template, "AWS::ElasticLoadBalancingV2::LoadBalancer")[
        listener["Properties"]["LoadBalancerArn"]["Ref"]
    ]
    return group, listener, balancer


def test_rad69_without_tls_stays_internal(production: Synthesized) -> None:
    # Given the defaults (listeners without TLS): RAD-69 speaks plain HTTP
    task_id, _ = _imaging_task(production)
    group, _, balancer = _imaging_balancer(production, task_id)
    # Then it is reachable from the private networks only
    assert group["Properties"]["Port"] == s.XDS_IMAGING_CONTAINER_PORT
    assert balancer["Properties"]["Scheme"] == "internal"


def test_rad69_terminates_tls_in_its_container_behind_a_tcp_pass_through(dev_with_tls: Synthesized) -> None:
    # Given a stack whose listeners take public client networks with TLS in their containers
    container = Match.object_like(
        {"PortMappings": [Match.object_like({"ContainerPort": s.XDS_IMAGING_TLS_PORT})]}
    )
    task_id, task = only(
        dev_with_tls.template,
        "AWS::ECS::TaskDefinition",
        Match.object_like({"ContainerDefinitions": [container]}),
    )
    (definition,) = task["Properties"]["ContainerDefinitions"]
    env = {e["Name"]: e["Value"] for e in definition["Environment"]}
    # Then the container serves HTTPS only, with the listeners' TLS secret (read by its role)
    assert (env[t.ENV_XDS_PORT], env[t.ENV_XDS_TLS_PORT]) == (s.PORT_OFF, str(s.XDS_IMAGING_TLS_PORT))
    secret = env[t.ENV_TLS_SECRET_ID]
    statements = statements_of_role(dev_with_tls.template, task["Properties"]["TaskRoleArn"]["Fn::GetAtt"][0])
    assert "secretsmanager:GetSecretValue" in actions_on(statements, secret)
    # And the load balancer passes TCP through on 443, reachable like the other listeners
    group, listener, balancer = _imaging_balancer(dev_with_tls, task_id)
    assert (group["Properties"]["Protocol"], group["Properties"]["Port"]) == ("TCP", s.XDS_IMAGING_TLS_PORT)
    assert (listener["Properties"]["Protocol"], listener["Properties"]["Port"]) == (
        "TCP",
        s.XDS_IMAGING_TLS_LISTENER_PORT,
    )
    assert balancer["Properties"]["Scheme"] == "internet-facing"


def test_xds_functions_and_rad69_write_audit_batches(dev_with_tls: Synthesized) -> None:
    for service in ("xds-registry", "xds-repository"):
        _, function = _function(dev_with_tls, service)
        variables = function["Properties"]["Environment"]["Variables"]
        audit_bucket = variables[t.ENV_AUDIT_BUCKET]["Ref"]
        statements = statements_of_role(
            dev_with_tls.template, function["Properties"]["Role"]["Fn::GetAtt"][0]
        )
        assert "s3:PutObject" in actions_on(statements, objects_under(audit_bucket, "audit/")), service
