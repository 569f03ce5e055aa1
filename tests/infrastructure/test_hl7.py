"""HL7 patient administration: the MLLP listener on Fargate behind its NLB, the FIFO queue with its
dead-letter queue and alarm, and the patient_update Lambda."""

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
    arn_of,
    audit_bucket,
    objects_under,
    only,
    ref,
    resources,
    s3_grants,
    statements_of_role,
)

HL7_PORT = 2575  # plain MLLP, and MLLP over TLS when listenerTls is on


def _listener(synthesized: Synthesized) -> dict[str, Any]:
    _, listener = only(
        synthesized.template, "AWS::ElasticLoadBalancingV2::Listener", Match.object_like({"Port": HL7_PORT})
    )
    return listener


def _task(synthesized: Synthesized) -> tuple[str, dict[str, Any]]:
    container = Match.object_like({"PortMappings": [Match.object_like({"ContainerPort": HL7_PORT})]})
    return only(
        synthesized.template,
        "AWS::ECS::TaskDefinition",
        Match.object_like({"ContainerDefinitions": [container]}),
    )


def _environment(synthesized: Synthesized) -> dict[str, Any]:
    _, task = _task(synthesized)
    (container,) = task["Properties"]["ContainerDefinitions"]
    return {e["Name"]: e["Value"] for e in container["Environment"]}


def _fifo_queue(synthesized: Synthesized) -> tuple[str, dict[str, Any]]:
    return only(
        synthesized.template,
        "AWS::SQS::Queue",
        Match.object_like({"FifoQueue": True, "RedrivePolicy": Match.any_value()}),
    )


def _function(synthesized: Synthesized) -> tuple[str, dict[str, Any]]:
    service = Match.object_like(
        {"Variables": Match.object_like({"POWERTOOLS_SERVICE_NAME": "patient-update"})}
    )
    return only(synthesized.template, "AWS::Lambda::Function", Match.object_like({"Environment": service}))


def test_with_tls_the_hl7_load_balancer_passes_tcp_through_to_mllp_over_tls_in_the_container(
    dev_with_tls: Synthesized,
) -> None:
    props = _listener(dev_with_tls)["Properties"]
    env = _environment(dev_with_tls)
    assert (props["Protocol"], props["Port"]) == ("TCP", HL7_PORT)
    assert "Certificates" not in props
    assert (env["HL7_TLS_PORT"], env["HL7_PORT"]) == (str(HL7_PORT), "off")
    (secret_id,) = resources(dev_with_tls.template, "AWS::SecretsManager::Secret")
    assert env["TLS_SECRET_ID"] == ref(secret_id)


def test_without_tls_the_hl7_listener_is_plain_tcp_and_synth_warns(production: Synthesized) -> None:
    assert _listener(production)["Properties"]["Protocol"] == "TCP"
    Annotations.from_stack(production.stack).has_warning(
        "*",
        Match.string_like_regexp(f"No TLS for the hl7 listener.*\\[ack: {NO_CERTIFICATE_WARNING_ID}\\]"),
    )


def test_hl7_load_balancer_admits_the_vpc_and_client_networks_on_2575_only(dev_with_tls: Synthesized) -> None:
    load_balancer_id = _listener(dev_with_tls)["Properties"]["LoadBalancerArn"]["Ref"]
    resources_json = dev_with_tls.template.to_json()["Resources"]
    (group,) = resources_json[load_balancer_id]["Properties"]["SecurityGroups"]
    ingress = resources_json[group["Fn::GetAtt"][0]]["Properties"]["SecurityGroupIngress"]
    assert {rule["CidrIp"] for rule in ingress} == {"10.60.0.0/16", "198.51.100.0/24"}
    assert {(rule["FromPort"], rule["ToPort"]) for rule in ingress} == {(HL7_PORT, HL7_PORT)}


def test_hl7_container_knows_its_port_queue_limits_and_tables(production: Synthesized) -> None:
    queue_id, _ = _fifo_queue(production)
    env = _environment(production)
    assert env["HL7_PORT"] == str(HL7_PORT)
    assert env["PATIENT_UPDATE_QUEUE_URL"] == ref(queue_id)
    assert int(env["HL7_MAX_MESSAGE_BYTES"]) > 0
    assert float(env["HL7_IDLE_TIMEOUT_SECONDS"]) > 0
    assert set(TABLE_ENV.values()) <= set(env)


def test_hl7_task_may_queue_messages_and_read_the_index_but_not_touch_images(production: Synthesized) -> None:
    queue_id, _ = _fifo_queue(production)
    _, task = _task(production)
    statements = statements_of_role(production.template, task["Properties"]["TaskRoleArn"]["Fn::GetAtt"][0])
    assert "sqs:SendMessage" in actions_on(statements, arn_of(queue_id))
    # In S3 only its audit batches: create, under audit/ in the audit bucket
    audit_id, _ = audit_bucket(production.template)
    assert s3_grants(statements) == [("s3:PutObject", objects_under(audit_id, "audit/"))]
    patients_id = _environment(production)[TABLE_ENV["patients"]]["Ref"]
    assert {"dynamodb:GetItem", "dynamodb:Query"} <= actions_on(statements, arn_of(patients_id))
    for table_id in resources(production.template, "AWS::DynamoDB::Table"):
        granted = actions_on(statements, arn_of(table_id))
        # It decides before queueing; the patient_update Lambda is what writes.
        assert not {"dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"} & granted, table_id


def test_patient_updates_queue_is_fifo_without_content_deduplication_and_dead_letters_into_fifo(
    production: Synthesized,
) -> None:
    _, queue = _fifo_queue(production)
    props = queue["Properties"]
    # Deduplication is by the sender's MSH-10 (MessageDeduplicationId), not by content
    assert props["ContentBasedDeduplication"] is False
    assert props["RedrivePolicy"]["maxReceiveCount"] == 5
    dlq = production.template.to_json()["Resources"][
        props["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
    ]
    assert dlq["Properties"]["FifoQueue"] is True
    assert "KmsMasterKeyId" in props


def test_patient_updates_dead_letters_raise_an_alarm(production: Synthesized) -> None:
    _, queue = _fifo_queue(production)
    dlq_id = queue["Properties"]["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
    only(
        production.template,
        "AWS::CloudWatch::Alarm",
        Match.object_like(
            {
                "MetricName": "ApproximateNumberOfMessagesVisible",
                "Dimensions": [{"Name": "QueueName", "Value": {"Fn::GetAtt": [dlq_id, "QueueName"]}}],
                "AlarmActions": Match.any_value(),
            }
        ),
    )


def test_patient_update_function_is_fed_by_the_fifo_queue_with_partial_failures(
    production: Synthesized,
) -> None:
    function_id, function = _function(production)
    queue_id, _ = _fifo_queue(production)
    _, mapping = only(
        production.template,
        "AWS::Lambda::EventSourceMapping",
        Match.object_like({"FunctionName": ref(function_id)}),
    )
    assert mapping["Properties"]["EventSourceArn"] == arn_of(queue_id)
    assert mapping["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["Properties"]["BatchSize"] <= 10  # the FIFO limit
    props = function["Properties"]
    assert props["Handler"] == "handler.handler"
    assert (props["Runtime"], props["Architectures"]) == ("python3.11", ["arm64"])
    assert set(TABLE_ENV.values()) <= set(props["Environment"]["Variables"])


def test_patient_update_function_writes_the_index_and_nothing_in_s3(production: Synthesized) -> None:
    _, function = _function(production)
    statements = statements_of_role(production.template, function["Properties"]["Role"]["Fn::GetAtt"][0])
    audit_id, _ = audit_bucket(production.template)
    assert s3_grants(statements) == [("s3:PutObject", objects_under(audit_id, "audit/"))]
    history_id = function["Properties"]["Environment"]["Variables"][TABLE_ENV["patient_history"]]["Ref"]
    assert {"dynamodb:PutItem", "dynamodb:Query"} <= actions_on(statements, arn_of(history_id))


def test_hl7_image_is_built_from_its_dockerfile_which_runs_as_non_root(production: Synthesized) -> None:
    manifest_path = Path(production.app.outdir) / f"{production.stack.artifact_id}.assets.json"
    images = json.loads(manifest_path.read_text())["dockerImages"].values()
    assert [
        i["source"]["platform"] for i in images if i["source"]["dockerFile"] == "listeners/hl7/Dockerfile"
    ] == ["linux/amd64"]
    dockerfile = (REPO_ROOT / "listeners" / "hl7" / "Dockerfile").read_text()
    users = re.findall(r"^USER\s+(\S+)", dockerfile, flags=re.MULTILINE)
    assert users and users[-1] not in ("root", "0")
    assert re.search(rf"^EXPOSE\s+{HL7_PORT}\b", dockerfile, flags=re.MULTILINE)
    assert '"-m", "listeners.hl7"' in dockerfile
