"""The failures the docs say are alarmed raise an alarm on the operator's topic: a storage
commitment report given up (UNDELIVERABLE) and a lost access record, besides dead letters."""

from __future__ import annotations

from typing import Any

from archive.topology import ACCESS_RECORD_LOST_LOG_TEXT, COMMITMENT_UNDELIVERABLE_METRIC
from aws_cdk.assertions import Match

from infrastructure.settings import REPO_ROOT
from tests.infrastructure.conftest import Synthesized
from tests.infrastructure.template_queries import dicom_task_definition, only, ref, resources


def _topic(synthesized: Synthesized) -> str:
    topic_id, _ = only(synthesized.template, "AWS::SNS::Topic")
    return topic_id


def _dicom_container(synthesized: Synthesized) -> dict[str, Any]:
    _, task = dicom_task_definition(synthesized.template)
    (container,) = task["Properties"]["ContainerDefinitions"]
    return container  # type: ignore[no-any-return]


def _pages_the_operator(alarm: dict[str, Any], topic_id: str) -> bool:
    props = alarm["Properties"]
    return ref(topic_id) in props.get("AlarmActions", []) and props["Threshold"] <= 1


def test_an_undeliverable_commitment_report_raises_an_alarm(production: Synthesized) -> None:
    # Given the metric the DICOM listener emits (EMF, namespace and service from its environment)
    env = {e["Name"]: e["Value"] for e in _dicom_container(production)["Environment"]}
    # Then an alarm watches exactly that metric, from the first one, and notifies the operator
    _, alarm = only(
        production.template,
        "AWS::CloudWatch::Alarm",
        Match.object_like({"MetricName": COMMITMENT_UNDELIVERABLE_METRIC}),
    )
    props = alarm["Properties"]
    assert props["Namespace"] == env["POWERTOOLS_METRICS_NAMESPACE"]
    assert props["Dimensions"] == [{"Name": "service", "Value": env["POWERTOOLS_SERVICE_NAME"]}]
    assert props["Statistic"] == "Sum"
    assert props["ComparisonOperator"] == "GreaterThanOrEqualToThreshold" and props["Threshold"] == 1
    assert props["TreatMissingData"] == "notBreaching"
    assert _pages_the_operator(alarm, _topic(production))
    assert "commitment undeliverable" in props["AlarmDescription"]


def test_a_lost_access_record_raises_an_alarm(production: Synthesized) -> None:
    # Given the DICOM listener's log group
    log_group = _dicom_container(production)["LogConfiguration"]["Options"]["awslogs-group"]
    # Then a metric filter there counts the listener's "ACCESS RECORD LOST" lines
    _, metric_filter = only(
        production.template, "AWS::Logs::MetricFilter", Match.object_like({"LogGroupName": log_group})
    )
    assert ACCESS_RECORD_LOST_LOG_TEXT in metric_filter["Properties"]["FilterPattern"]
    (transformation,) = metric_filter["Properties"]["MetricTransformations"]
    # And an alarm on that metric notifies the operator
    _, alarm = only(
        production.template,
        "AWS::CloudWatch::Alarm",
        Match.object_like(
            {"MetricName": transformation["MetricName"], "Namespace": transformation["MetricNamespace"]}
        ),
    )
    assert _pages_the_operator(alarm, _topic(production))
    # And the listener really logs that text where a disclosure's record cannot be written
    source = (REPO_ROOT / "listeners" / "dicom" / "query_retrieve.py").read_text()
    assert f'"{ACCESS_RECORD_LOST_LOG_TEXT}' in source


def test_every_alarm_notifies_the_operator_and_every_dead_letter_queue_has_one(
    production: Synthesized,
) -> None:
    topic_id = _topic(production)
    alarms = resources(production.template, "AWS::CloudWatch::Alarm")
    assert all(_pages_the_operator(alarm, topic_id) for alarm in alarms.values())
    dead_letter_queues = {
        queue["Properties"]["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
        for queue in resources(production.template, "AWS::SQS::Queue").values()
        if "RedrivePolicy" in queue["Properties"]
    }
    watched = {
        dimension["Value"]["Fn::GetAtt"][0]
        for alarm in alarms.values()
        for dimension in alarm["Properties"].get("Dimensions", [])
        if dimension["Name"] == "QueueName"
    }
    assert dead_letter_queues and dead_letter_queues <= watched
