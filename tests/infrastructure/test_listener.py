"""The DICOM listener on Fargate behind a Network Load Balancer, and the network it runs in."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from archive.topology import TABLE_ENV
from aws_cdk.assertions import Annotations, Match

from infrastructure.listener_service import NO_CERTIFICATE_WARNING_ID
from infrastructure.settings import REPO_ROOT
from tests.infrastructure.conftest import Synthesized
from tests.infrastructure.template_queries import (
    actions_on,
    all_actions,
    archive_bucket,
    arn_of,
    dicom_task_definition,
    objects_of,
    only,
    ref,
    resources,
    statements_of_role,
)

DICOM_PORT = 11112
DICOM_TLS_PORT = 2762


def _port(synthesized: Synthesized) -> int:
    return (
        DICOM_TLS_PORT if synthesized is not None and _has_port(synthesized, DICOM_TLS_PORT) else DICOM_PORT
    )


def _has_port(synthesized: Synthesized, port: int) -> bool:
    return bool(
        resources(
            synthesized.template, "AWS::ElasticLoadBalancingV2::Listener", Match.object_like({"Port": port})
        )
    )


def _listener(synthesized: Synthesized) -> dict[str, Any]:
    """The load balancer listener of the DICOM listener (the HL7 listener has its own)."""
    _, listener = only(
        synthesized.template,
        "AWS::ElasticLoadBalancingV2::Listener",
        Match.object_like({"Port": _port(synthesized)}),
    )
    return listener


def _load_balancer_id(synthesized: Synthesized) -> str:
    load_balancer_id: str = _listener(synthesized)["Properties"]["LoadBalancerArn"]["Ref"]
    return load_balancer_id


def _load_balancer(synthesized: Synthesized) -> dict[str, Any]:
    load_balancer: dict[str, Any] = synthesized.template.to_json()["Resources"][
        _load_balancer_id(synthesized)
    ]
    assert load_balancer["Properties"]["Type"] == "network"
    return load_balancer


def _container(synthesized: Synthesized) -> dict[str, Any]:
    _, task = dicom_task_definition(synthesized.template)
    (container,) = task["Properties"]["ContainerDefinitions"]
    return container  # type: ignore[no-any-return]


def test_with_tls_the_load_balancer_passes_tcp_through_to_the_containers_tls_port(
    dev_with_tls: Synthesized,
) -> None:
    # Given a stack synthesized with listenerTls=true
    # When we look at the load balancer's listener, its target group and the container
    props = _listener(dev_with_tls)["Properties"]
    (action,) = props["DefaultActions"]
    target_group = dev_with_tls.template.to_json()["Resources"][action["TargetGroupArn"]["Ref"]]["Properties"]
    env = {e["Name"]: e["Value"] for e in _container(dev_with_tls)["Environment"]}

    # Then TCP passes through on the dicom-tls port to the container, which terminates TLS itself
    # with the stack's TLS secret, the plain port switched off
    assert (props["Protocol"], props["Port"]) == ("TCP", DICOM_TLS_PORT)
    assert "Certificates" not in props
    assert (target_group["Protocol"], target_group["Port"]) == ("TCP", DICOM_TLS_PORT)
    assert env["DICOM_TLS_PORT"] == str(DICOM_TLS_PORT)
    assert env["DICOM_PORT"] == "off"
    (secret_id,) = resources(dev_with_tls.template, "AWS::SecretsManager::Secret")
    assert env["TLS_SECRET_ID"] == ref(secret_id)


def test_without_tls_the_listener_is_plain_tcp_and_synth_warns(production: Synthesized) -> None:
    props = _listener(production)["Properties"]

    assert props["Protocol"] == "TCP"
    assert props["Port"] == DICOM_PORT
    assert "TLS_SECRET_ID" not in {e["Name"] for e in _container(production)["Environment"]}
    Annotations.from_stack(production.stack).has_warning(
        "*",
        Match.string_like_regexp(f"No TLS for the dicom listener.*\\[ack: {NO_CERTIFICATE_WARNING_ID}\\]"),
    )


def test_forwards_to_the_tasks_and_health_checks_them_over_tcp(production: Synthesized) -> None:
    (target_group_ref,) = [a["TargetGroupArn"] for a in _listener(production)["Properties"]["DefaultActions"]]
    target_group = production.template.to_json()["Resources"][target_group_ref["Ref"]]["Properties"]

    assert target_group["Protocol"] == "TCP"
    assert target_group["Port"] == DICOM_PORT
    assert target_group["TargetType"] == "ip"
    assert target_group["HealthCheckProtocol"] == "TCP"
    # The tasks see the caller's address, which must be one registered for its AE
    attributes = {a["Key"]: a["Value"] for a in target_group["TargetGroupAttributes"]}
    assert attributes["preserve_client_ip.enabled"] == "true"


def test_load_balancer_is_internal_unless_public_networks_may_connect(
    production: Synthesized, dev_with_tls: Synthesized
) -> None:
    # Given a stack with no client networks and one that admits a public range
    # Then the first load balancer is internal and the second internet-facing
    assert _load_balancer(production)["Properties"]["Scheme"] == "internal"
    assert _load_balancer(dev_with_tls)["Properties"]["Scheme"] == "internet-facing"


def test_only_the_vpc_and_the_configured_client_networks_may_connect(dev_with_tls: Synthesized) -> None:
    # Given the load balancer's security group
    (group_id,) = [g["Fn::GetAtt"][0] for g in _load_balancer(dev_with_tls)["Properties"]["SecurityGroups"]]
    ingress = dev_with_tls.template.to_json()["Resources"][group_id]["Properties"]["SecurityGroupIngress"]

    # Then it admits exactly the VPC and the clientCidrs, on the DICOM TLS port only
    assert {rule["CidrIp"] for rule in ingress} == {"10.60.0.0/16", "198.51.100.0/24"}
    assert {(rule["FromPort"], rule["ToPort"], rule["IpProtocol"]) for rule in ingress} == {
        (DICOM_TLS_PORT, DICOM_TLS_PORT, "tcp")
    }


def test_service_runs_on_fargate_in_private_subnets_and_scales_on_cpu(production: Synthesized) -> None:
    service_id, service = only(
        production.template,
        "AWS::ECS::Service",
        Match.object_like({"LoadBalancers": [Match.object_like({"ContainerPort": DICOM_PORT})]}),
    )
    props = service["Properties"]

    assert props["LaunchType"] == "FARGATE"
    assert props["DesiredCount"] >= 2  # one task per availability zone at least
    assert props["NetworkConfiguration"]["AwsvpcConfiguration"]["AssignPublicIp"] == "DISABLED"
    assert props["DeploymentConfiguration"]["DeploymentCircuitBreaker"] == {"Enable": True, "Rollback": True}
    assert [target["ContainerPort"] for target in props["LoadBalancers"]] == [DICOM_PORT]

    (target_id, target), *others = [
        (target_id, target)
        for target_id, target in resources(
            production.template, "AWS::ApplicationAutoScaling::ScalableTarget"
        ).items()
        if service_id in json.dumps(target["Properties"]["ResourceId"])
    ]
    assert not others
    _, policy = only(
        production.template,
        "AWS::ApplicationAutoScaling::ScalingPolicy",
        Match.object_like({"ScalingTargetId": ref(target_id)}),
    )
    config = policy["Properties"]["TargetTrackingScalingPolicyConfiguration"]
    assert (
        config["PredefinedMetricSpecification"]["PredefinedMetricType"] == "ECSServiceAverageCPUUtilization"
    )
    assert target["Properties"]["MaxCapacity"] > target["Properties"]["MinCapacity"] >= 2


def test_container_gets_the_archive_environment_and_logs_to_cloudwatch(production: Synthesized) -> None:
    bucket_id, _ = archive_bucket(production.template)
    container = _container(production)
    env = {e["Name"]: e["Value"] for e in container["Environment"]}

    assert env["ARCHIVE_BUCKET"] == ref(bucket_id)
    assert env["ARCHIVE_AE_TITLE"] == "ARCHIVE"
    assert set(TABLE_ENV.values()) <= set(env)
    assert env["SPOOL_DIR"] == "/tmp"
    assert env["DICOM_PORT"] == str(DICOM_PORT)
    assert env["COMMITMENT_WAIT_SECONDS"] == "60"
    assert env["OBJECT_LOCK_MODE"] == "COMPLIANCE"
    assert container["LogConfiguration"]["LogDriver"] == "awslogs"
    log_group_ref = container["LogConfiguration"]["Options"]["awslogs-group"]
    log_group = production.template.to_json()["Resources"][log_group_ref["Ref"]]
    assert log_group["Properties"]["RetentionInDays"] > 0


def test_task_may_store_and_read_objects_but_not_delete_them(production: Synthesized) -> None:
    bucket_id, _ = archive_bucket(production.template)
    _, task = dicom_task_definition(production.template)
    role_id = task["Properties"]["TaskRoleArn"]["Fn::GetAtt"][0]
    statements = statements_of_role(production.template, role_id)

    assert actions_on(statements, objects_of(bucket_id)) >= {"s3:PutObject", "s3:GetObject"}
    assert not {a for a in all_actions(statements) if "Delete" in a and a.startswith("s3:")}
    # The PUT carries its retain-until date (docs/retention.md); COMPLIANCE locks can only be
    # lengthened, and without the bypass action no GOVERNANCE lock can be shortened either.
    assert {a for a in all_actions(statements) if a.startswith("s3:") and "Retention" in a} == {
        "s3:PutObjectRetention"
    }
    # An object stored into a held study is held from its PUT: the legal hold may be turned ON only
    held = [s for s in statements if "s3:PutObjectLegalHold" in all_actions([s])]
    assert held and all(s["Condition"] == {"StringEquals": {"s3:object-lock-legal-hold": "ON"}} for s in held)
    assert {a for a in all_actions(statements) if a.startswith("s3:") and "LegalHold" in a} == {
        "s3:PutObjectLegalHold"
    }
    env = {e["Name"]: e["Value"] for e in _container(production)["Environment"]}
    for name in ("commitments", "commitment_parts", "studies"):
        table_id = env[TABLE_ENV[name]]["Ref"]
        assert {"dynamodb:PutItem", "dynamodb:Query"} <= actions_on(statements, arn_of(table_id)), name


def test_image_is_built_from_the_dicom_dockerfile_for_the_task_platform(production: Synthesized) -> None:
    # Given the cloud assembly's asset manifest
    manifest_path = Path(production.app.outdir) / f"{production.stack.artifact_id}.assets.json"
    (image,) = [
        image
        for image in json.loads(manifest_path.read_text())["dockerImages"].values()
        if image["source"]["dockerFile"] == "listeners/dicom/Dockerfile"
    ]

    # Then the image is built with the repository as context and the DICOM Dockerfile,
    # for the CPU the task runs on
    assert image["source"]["dockerFile"] == "listeners/dicom/Dockerfile"
    assert image["source"]["platform"] == "linux/amd64"
    _, task = dicom_task_definition(production.template)
    assert task["Properties"]["RuntimePlatform"]["CpuArchitecture"] == "X86_64"
    staged = Path(production.app.outdir) / image["source"]["directory"]
    assert (staged / "listeners" / "dicom" / "__main__.py").exists()
    assert (staged / "layers" / "core" / "python" / "archive").is_dir()
    assert not (staged / ".venv").exists()
    assert not (staged / "tests").exists()


def test_dockerfile_runs_the_listener_as_a_non_root_user_on_the_dicom_port() -> None:
    dockerfile = (REPO_ROOT / "listeners" / "dicom" / "Dockerfile").read_text()

    users = re.findall(r"^USER\s+(\S+)", dockerfile, flags=re.MULTILINE)
    assert users and users[-1] not in ("root", "0")
    assert re.search(rf"^EXPOSE\s+{DICOM_PORT}\b", dockerfile, flags=re.MULTILINE)
    assert '"-m", "listeners.dicom"' in dockerfile


def test_network_has_private_subnets_with_nat_and_gateway_endpoints(production: Synthesized) -> None:
    assert resources(production.template, "AWS::EC2::NatGateway")
    endpoints = resources(production.template, "AWS::EC2::VPCEndpoint")
    services = json.dumps([e["Properties"]["ServiceName"] for e in endpoints.values()])
    assert "s3" in services
    assert "dynamodb" in services
    production.template.has_resource_properties("AWS::EC2::FlowLog", {"TrafficType": "ALL"})


def test_stack_outputs_the_load_balancer_dns_name(production: Synthesized) -> None:
    load_balancer_id = _load_balancer_id(production)
    outputs = production.template.find_outputs("*", {"Value": {"Fn::GetAtt": [load_balancer_id, "DNSName"]}})
    assert len(outputs) == 1
