"""Retention jobs on AWS: the extend_retention Lambda fed by its encrypted queue with dead letters
alarmed, which may only read and lengthen Object Locks on S3, and who may start a job."""

from __future__ import annotations

from archive import topology as t

from tests.infrastructure.conftest import Synthesized
from tests.infrastructure.template_queries import actions_on, arn_of, s3_grants, statements_of_role
from tests.infrastructure.test_registration import _alarm_on_dead_letters_of, _function, _queue_of


def test_retention_job_function_is_fed_by_its_encrypted_queue_with_dead_letters_alarmed(
    production: Synthesized,
) -> None:
    # Given the production stack
    # When we look at the extend_retention function and the queue feeding it
    function_id, function = _function(production, "extend-retention")
    queue_id, queue, mapping = _queue_of(production, function_id)
    # Then it takes one page per invocation and reports failures per message
    assert mapping["Properties"]["BatchSize"] == t.EXTEND_RETENTION.batch_size == 1
    assert mapping["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    props = queue["Properties"]
    assert props["RedrivePolicy"]["maxReceiveCount"] == t.RETENTION_QUEUE.max_receive_count
    assert "KmsMasterKeyId" in props and "FifoQueue" not in props
    assert props["VisibilityTimeout"] >= 6 * function["Properties"]["Timeout"]
    # And a page that keeps failing pages the operator (its dead-letter queue has an alarm)
    _alarm_on_dead_letters_of(production, queue)
    # And the function queues its own continuation pages on that queue
    role_id = function["Properties"]["Role"]["Fn::GetAtt"][0]
    statements = statements_of_role(production.template, role_id)
    assert "sqs:SendMessage" in actions_on(statements, arn_of(queue_id))
    assert function["Properties"]["Environment"]["Variables"][t.ENV_RETENTION_QUEUE_URL] == {"Ref": queue_id}


def test_retention_job_may_only_read_and_lengthen_object_locks(production: Synthesized) -> None:
    # Given the extend_retention function's role
    _, function = _function(production, "extend-retention")
    statements = statements_of_role(production.template, function["Properties"]["Role"]["Fn::GetAtt"][0])
    # Then on S3 it may read a version's lock and put a retention, nothing else: no content
    # write, no delete, no governance bypass, no legal hold
    actions = {action for action, _ in s3_grants(statements)}
    assert actions == {
        "s3:GetObject",
        "s3:GetObjectVersion",
        "s3:GetObjectRetention",
        "s3:PutObjectRetention",
    }


def test_patient_updates_may_start_retention_jobs(production: Synthesized) -> None:
    # Given the patient_update function (HL7 PID-29/30 record or retract a death)
    _, patient_update = _function(production, "patient-update")
    queue_id, _, _ = _queue_of(production, _function(production, "extend-retention")[0])
    # Then it knows the retention queue and may send to it
    variables = patient_update["Properties"]["Environment"]["Variables"]
    assert variables[t.ENV_RETENTION_QUEUE_URL] == {"Ref": queue_id}
    statements = statements_of_role(
        production.template, patient_update["Properties"]["Role"]["Fn::GetAtt"][0]
    )
    assert "sqs:SendMessage" in actions_on(statements, arn_of(queue_id))
