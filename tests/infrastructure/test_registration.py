"""Registration (register_study Lambda and its queue) and IAN delivery (send_ian Lambda in the VPC,
its queue whose redrive count is the number of attempts, dead letters alarmed), and who may ask for
a registration."""

from __future__ import annotations

from typing import Any

from archive import topology as t
from archive.topology import TABLE_ENV
from aws_cdk.assertions import Match

from infrastructure import settings as s
from tests.infrastructure.conftest import Synthesized
from tests.infrastructure.template_queries import (
    actions_on,
    all_actions,
    arn_of,
    dicom_task_definition,
    index_function,
    objects_of,
    only,
    ref,
    resources,
    statements_of_role,
)


def _function(synthesized: Synthesized, service: str) -> tuple[str, dict[str, Any]]:
    env = Match.object_like({"Variables": Match.object_like({"POWERTOOLS_SERVICE_NAME": service})})
    return only(synthesized.template, "AWS::Lambda::Function", Match.object_like({"Environment": env}))


def _queue_of(synthesized: Synthesized, function_id: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """The queue feeding a function, with its event source mapping."""
    _, mapping = only(
        synthesized.template,
        "AWS::Lambda::EventSourceMapping",
        Match.object_like({"FunctionName": ref(function_id)}),
    )
    queue_id = mapping["Properties"]["EventSourceArn"]["Fn::GetAtt"][0]
    queue = resources(synthesized.template, "AWS::SQS::Queue")[queue_id]
    return queue_id, queue, mapping


def _alarm_on_dead_letters_of(synthesized: Synthesized, queue: dict[str, Any]) -> None:
    dlq_id = queue["Properties"]["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
    only(
        synthesized.template,
        "AWS::CloudWatch::Alarm",
        Match.object_like(
            {
                "MetricName": "ApproximateNumberOfMessagesVisible",
                "Dimensions": [{"Name": "QueueName", "Value": {"Fn::GetAtt": [dlq_id, "QueueName"]}}],
                "Threshold": 0,
                "AlarmActions": Match.any_value(),
            }
        ),
    )


def test_register_function_is_fed_by_its_encrypted_queue_with_dead_letters_alarmed(
    production: Synthesized,
) -> None:
    function_id, function = _function(production, "register-study")
    queue_id, queue, mapping = _queue_of(production, function_id)
    assert mapping["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    props = queue["Properties"]
    assert props["RedrivePolicy"]["maxReceiveCount"] == s.REGISTER_MAX_RECEIVE_COUNT
    assert "KmsMasterKeyId" in props and "FifoQueue" not in props
    # (the visibility outlasts six function timeouts, as AWS recommends for Lambda event sources)
    assert props["VisibilityTimeout"] >= 6 * function["Properties"]["Timeout"]
    _alarm_on_dead_letters_of(production, queue)
    variables = function["Properties"]["Environment"]["Variables"]
    assert variables[t.ENV_REGISTRATION_QUEUE_URL] == ref(queue_id)
    assert set(TABLE_ENV.values()) <= set(variables) and t.ENV_IAN_QUEUE_URL in variables


def test_register_function_stores_manifests_requeues_itself_and_queues_ians(production: Synthesized) -> None:
    function_id, function = _function(production, "register-study")
    registration_queue_id, _, _ = _queue_of(production, function_id)
    ian_function_id, _ = _function(production, "send-ian")
    ian_queue_id, _, _ = _queue_of(production, ian_function_id)
    statements = statements_of_role(production.template, function["Properties"]["Role"]["Fn::GetAtt"][0])
    assert "sqs:SendMessage" in actions_on(statements, arn_of(registration_queue_id))
    assert "sqs:SendMessage" in actions_on(statements, arn_of(ian_queue_id))
    bucket = function["Properties"]["Environment"]["Variables"][t.ENV_BUCKET]["Ref"]
    assert {"s3:PutObject", "s3:GetObject"} <= actions_on(statements, objects_of(bucket))
    assert not {a for a in all_actions(statements) if a in ("s3:DeleteObject", "s3:DeleteObjectVersion")}
    registry = function["Properties"]["Environment"]["Variables"][TABLE_ENV["xds_registry"]]["Ref"]
    assert {"dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:Query"} <= actions_on(
        statements, arn_of(registry)
    )


def test_ian_queue_dead_letters_after_the_configured_attempts_with_an_alarm(production: Synthesized) -> None:
    function_id, function = _function(production, "send-ian")
    queue_id, queue, mapping = _queue_of(production, function_id)
    assert queue["Properties"]["RedrivePolicy"]["maxReceiveCount"] == s.IAN_MAX_ATTEMPTS
    assert mapping["Properties"]["BatchSize"] == 1
    assert mapping["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    _alarm_on_dead_letters_of(production, queue)
    variables = function["Properties"]["Environment"]["Variables"]
    assert variables[t.ENV_IAN_QUEUE_URL] == ref(queue_id)
    assert variables[t.ENV_IAN_MAX_ATTEMPTS] == str(s.IAN_MAX_ATTEMPTS)
    assert variables[t.ENV_IAN_RETRY_BASE] == str(s.IAN_RETRY_BASE_SECONDS)
    # An attempt (connect, associate, N-CREATE, each bounded) ends before the function times out
    assert function["Properties"]["Timeout"] > 3 * int(variables[t.ENV_IAN_TIMEOUT])
    # The operator's resend finds the queue in the stack's outputs
    outputs = production.template.find_outputs("*", {"Value": ref(queue_id)})
    assert len(outputs) == 1
    # The handler backs off by changing its message's visibility
    statements = statements_of_role(production.template, function["Properties"]["Role"]["Fn::GetAtt"][0])
    assert "sqs:ChangeMessageVisibility" in actions_on(statements, arn_of(queue_id))


def test_ian_function_runs_in_the_private_subnets_to_reach_customers_nodes(production: Synthesized) -> None:
    _, function = _function(production, "send-ian")
    vpc_config = function["Properties"]["VpcConfig"]
    private = resources(
        production.template,
        "AWS::EC2::Subnet",
        Match.object_like({"Tags": Match.array_with([{"Key": "aws-cdk:subnet-type", "Value": "Private"}])}),
    )
    assert {subnet["Ref"] for subnet in vpc_config["SubnetIds"]} == set(private)
    assert len(vpc_config["SecurityGroupIds"]) == 1
    # The register function needs no network of customers: it stays out of the VPC
    _, register = _function(production, "register-study")
    assert "VpcConfig" not in register["Properties"]


def test_commitment_worker_indexer_and_patient_updates_may_ask_for_registrations(
    production: Synthesized,
) -> None:
    register_id, _ = _function(production, "register-study")
    queue_id, _, _ = _queue_of(production, register_id)
    _, index = index_function(production.template)
    _, patient_update = _function(production, "patient-update")
    _, task = dicom_task_definition(production.template)
    (container,) = task["Properties"]["ContainerDefinitions"]
    assert {e["Name"]: e["Value"] for e in container["Environment"]}[t.ENV_REGISTRATION_QUEUE_URL] == ref(
        queue_id
    )
    for role_id in (
        index["Properties"]["Role"]["Fn::GetAtt"][0],
        patient_update["Properties"]["Role"]["Fn::GetAtt"][0],
        task["Properties"]["TaskRoleArn"]["Fn::GetAtt"][0],
    ):
        assert "sqs:SendMessage" in actions_on(
            statements_of_role(production.template, role_id), arn_of(queue_id)
        )
    for function in (index, patient_update):
        assert function["Properties"]["Environment"]["Variables"][t.ENV_REGISTRATION_QUEUE_URL] == ref(
            queue_id
        )
