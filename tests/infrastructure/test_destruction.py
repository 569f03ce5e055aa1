"""The destruction job on AWS: a Lambda run daily by EventBridge Scheduler, allowed to delete
object versions (S3 Object Lock decides when) but never to bypass retention, with an alarm."""

from __future__ import annotations

from archive.topology import DESTROY_EXPIRED, TABLE_ENV
from aws_cdk.assertions import Match

from tests.infrastructure.conftest import Synthesized
from tests.infrastructure.template_queries import (
    actions_on,
    all_actions,
    archive_bucket,
    arn_of,
    only,
    resources,
    statements_of_role,
)


def _function(production: Synthesized) -> tuple[str, dict]:  # type: ignore[type-arg]
    service = Match.object_like(
        {"Variables": Match.object_like({"POWERTOOLS_SERVICE_NAME": "destroy-expired"})}
    )
    return only(production.template, "AWS::Lambda::Function", Match.object_like({"Environment": service}))


def test_scheduler_invokes_the_destruction_function_daily(production: Synthesized) -> None:
    function_id, function = _function(production)
    _, schedule = only(production.template, "AWS::Scheduler::Schedule")
    props = schedule["Properties"]
    assert props["ScheduleExpression"] == DESTROY_EXPIRED.schedule
    assert props["ScheduleExpressionTimezone"] == "UTC"
    assert props["Target"]["Arn"] == arn_of(function_id)
    assert function["Properties"]["ReservedConcurrentExecutions"] == 1
    assert set(TABLE_ENV.values()) <= set(function["Properties"]["Environment"]["Variables"])


def test_destruction_may_delete_versions_but_never_bypass_retention(production: Synthesized) -> None:
    bucket_id, _ = archive_bucket(production.template)
    _, function = _function(production)
    role_id = function["Properties"]["Role"]["Fn::GetAtt"][0]
    statements = statements_of_role(production.template, role_id)
    assert "s3:DeleteObjectVersion" in all_actions(statements)
    assert "s3:ListBucketVersions" in actions_on(statements, arn_of(bucket_id))
    # It may read a version's lock and legal hold (to check before deleting), never change or bypass them
    assert {"s3:GetObjectRetention", "s3:GetObjectLegalHold"} <= all_actions(statements)
    assert not {
        a
        for a in all_actions(statements)
        if "Bypass" in a or a in ("s3:*", "s3:PutObjectRetention", "s3:PutObjectLegalHold")
    }


def test_a_failed_run_alarms_the_operator(production: Synthesized) -> None:
    function_id, _ = _function(production)
    alarms = resources(
        production.template,
        "AWS::CloudWatch::Alarm",
        Match.object_like(
            {"MetricName": "Errors", "Dimensions": [{"Name": "FunctionName", "Value": {"Ref": function_id}}]}
        ),
    )
    assert len(alarms) == 1
    (alarm,) = alarms.values()
    assert alarm["Properties"]["AlarmActions"]
