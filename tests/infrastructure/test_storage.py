"""The archive bucket, its index queue and the alarm on dead letters."""

from __future__ import annotations

from aws_cdk.assertions import Match

from tests.infrastructure.conftest import Synthesized
from tests.infrastructure.template_queries import (
    actions_on,
    archive_bucket,
    arn_of,
    index_queue,
    only,
    ref,
    resources,
    statements_of_role,
)


def test_archive_bucket_is_versioned_locked_encrypted_private_and_kept(production: Synthesized) -> None:
    # Given the production stack
    # When we look at the bucket that holds the DICOM objects
    _, bucket = archive_bucket(production.template)
    props = bucket["Properties"]

    # Then it is versioned, Object-Locked, KMS-encrypted, closed to the public and never deleted
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    assert props["ObjectLockConfiguration"]["ObjectLockEnabled"] == "Enabled"
    (encryption,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert encryption["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
    assert props["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert bucket["DeletionPolicy"] == "Retain"
    assert bucket["UpdateReplacePolicy"] == "Retain"


def test_archive_bucket_key_rotates(production: Synthesized) -> None:
    _, bucket = archive_bucket(production.template)
    (encryption,) = bucket["Properties"]["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    key_id = encryption["ServerSideEncryptionByDefault"]["KMSMasterKeyID"]["Fn::GetAtt"][0]

    key = production.template.to_json()["Resources"][key_id]
    assert key["Type"] == "AWS::KMS::Key"
    assert key["Properties"]["EnableKeyRotation"] is True


def test_production_retention_is_compliance_for_ten_years(production: Synthesized) -> None:
    _, bucket = archive_bucket(production.template)
    assert bucket["Properties"]["ObjectLockConfiguration"]["Rule"]["DefaultRetention"] == {
        "Mode": "COMPLIANCE",
        "Days": 3650,
    }


def test_dev_retention_follows_context(dev_with_tls: Synthesized) -> None:
    # Given a dev stack synthesized with objectLockMode=GOVERNANCE and retentionDays=30
    # When we look at the archive bucket
    _, bucket = archive_bucket(dev_with_tls.template)

    # Then its default retention is what the context asked for
    assert bucket["Properties"]["ObjectLockConfiguration"]["Rule"]["DefaultRetention"] == {
        "Mode": "GOVERNANCE",
        "Days": 30,
    }


def test_archive_bucket_refuses_requests_without_tls(production: Synthesized) -> None:
    bucket_id, _ = archive_bucket(production.template)
    _, policy = only(
        production.template, "AWS::S3::BucketPolicy", Match.object_like({"Bucket": ref(bucket_id)})
    )

    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    assert {
        "Action": "s3:*",
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        "Effect": "Deny",
        "Principal": {"AWS": "*"},
        "Resource": [arn_of(bucket_id), {"Fn::Join": ["", [arn_of(bucket_id), "/*"]]}],
    } in statements


def test_server_access_logs_go_to_a_separate_private_bucket(production: Synthesized) -> None:
    # Given the archive bucket's logging configuration
    bucket_id, bucket = archive_bucket(production.template)
    logs_ref = bucket["Properties"]["LoggingConfiguration"]["DestinationBucketName"]

    # Then the destination is another bucket of the stack, SSE-S3 (the only kind S3 logs to),
    # closed to the public and kept
    assert logs_ref != ref(bucket_id)
    logs_bucket = production.template.to_json()["Resources"][logs_ref["Ref"]]
    (encryption,) = logs_bucket["Properties"]["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert encryption["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    assert logs_bucket["Properties"]["PublicAccessBlockConfiguration"]["BlockPublicPolicy"] is True
    assert logs_bucket["DeletionPolicy"] == "Retain"


def _index_queue(synthesized: Synthesized) -> tuple[str, dict]:  # type: ignore[type-arg]
    """The queue the bucket notifies: the standard queue with a redrive policy."""
    return index_queue(synthesized.template)


def test_object_created_events_go_to_the_index_queue(production: Synthesized) -> None:
    # Given the archive bucket and the index queue
    bucket_id, _ = archive_bucket(production.template)
    queue_id, _ = _index_queue(production)

    # Then every ObjectCreated event of the bucket is sent to that queue
    production.template.has_resource_properties(
        "Custom::S3BucketNotifications",
        {
            "BucketName": ref(bucket_id),
            "NotificationConfiguration": {
                "QueueConfigurations": [{"Events": ["s3:ObjectCreated:*"], "QueueArn": arn_of(queue_id)}]
            },
        },
    )


def test_index_queue_dead_letters_after_five_receives(production: Synthesized) -> None:
    _, queue = _index_queue(production)
    redrive = queue["Properties"]["RedrivePolicy"]
    assert redrive["maxReceiveCount"] == 5

    dlq_id = redrive["deadLetterTargetArn"]["Fn::GetAtt"][0]
    dlq = production.template.to_json()["Resources"][dlq_id]
    assert dlq["Type"] == "AWS::SQS::Queue"


def test_queues_are_kms_encrypted_and_tls_only(production: Synthesized) -> None:
    queues = resources(production.template, "AWS::SQS::Queue")
    assert len(queues) >= 2
    for queue_id, queue in queues.items():
        assert "KmsMasterKeyId" in queue["Properties"], queue_id
        production.template.has_resource_properties(
            "AWS::SQS::QueuePolicy",
            {
                "Queues": [ref(queue_id)],
                "PolicyDocument": {
                    "Statement": Match.array_with(
                        [
                            Match.object_like(
                                {"Effect": "Deny", "Condition": {"Bool": {"aws:SecureTransport": "false"}}}
                            )
                        ]
                    )
                },
            },
        )


def test_every_dead_letter_queue_has_an_alarm_to_an_encrypted_topic(production: Synthesized) -> None:
    # Given every queue that some other queue dead-letters into
    dead_letter_queues = {
        queue["Properties"]["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
        for queue in resources(production.template, "AWS::SQS::Queue").values()
        if "RedrivePolicy" in queue["Properties"]
    }
    assert dead_letter_queues

    # Then each has an alarm on its first visible message, which notifies an encrypted SNS topic
    for dlq_id in dead_letter_queues:
        _, alarm = only(
            production.template,
            "AWS::CloudWatch::Alarm",
            Match.object_like(
                {
                    "Namespace": "AWS/SQS",
                    "MetricName": "ApproximateNumberOfMessagesVisible",
                    "Dimensions": [{"Name": "QueueName", "Value": {"Fn::GetAtt": [dlq_id, "QueueName"]}}],
                }
            ),
        )
        props = alarm["Properties"]
        assert props["ComparisonOperator"] == "GreaterThanThreshold"
        assert props["Threshold"] == 0
        (action,) = props["AlarmActions"]
        topic = production.template.to_json()["Resources"][action["Ref"]]
        assert topic["Type"] == "AWS::SNS::Topic"
        assert "KmsMasterKeyId" in topic["Properties"]


def test_instances_move_to_glacier_ir_after_90_days_then_deep_archive_after_2_years(
    production: Synthesized,
) -> None:
    # Given the production stack with the default tiers
    _, bucket = archive_bucket(production.template)
    (rule,) = bucket["Properties"]["LifecycleConfiguration"]["Rules"]
    # Then instance objects over 128 KB move to Glacier IR at 90 days and Deep Archive at 730
    assert rule["Status"] == "Enabled"
    assert rule["Prefix"] == "instances/"
    assert rule["ObjectSizeGreaterThan"] == 128 * 1024 - 1
    assert rule["Transitions"] == [
        {"StorageClass": "GLACIER_IR", "TransitionInDays": 90},
        {"StorageClass": "DEEP_ARCHIVE", "TransitionInDays": 730},
    ]
    # And nothing expires by lifecycle: only the destruction job deletes, when Object Lock allows
    assert "ExpirationInDays" not in rule and "NoncurrentVersionExpiration" not in rule
    assert "NoncurrentVersionTransitions" not in rule
    # And Object Lock is the bucket's, whatever the class (a transition keeps version and lock)
    assert bucket["Properties"]["ObjectLockConfiguration"]["ObjectLockEnabled"] == "Enabled"


def test_storage_class_and_restore_events_go_from_eventbridge_to_the_storage_events_queue(
    production: Synthesized,
) -> None:
    # Given the archive bucket, which sends its events to EventBridge
    bucket_id, _ = archive_bucket(production.template)
    _, notifications = only(
        production.template,
        "Custom::S3BucketNotifications",
        Match.object_like({"BucketName": ref(bucket_id)}),
    )
    assert "EventBridgeConfiguration" in notifications["Properties"]["NotificationConfiguration"]
    # Then one rule takes exactly its class changes and restore events to an encrypted queue
    _, rule = only(
        production.template,
        "AWS::Events::Rule",
        Match.object_like({"EventPattern": Match.object_like({"source": ["aws.s3"]})}),
    )
    pattern = rule["Properties"]["EventPattern"]
    assert sorted(pattern["detail-type"]) == [
        "Object Restore Completed",
        "Object Restore Expired",
        "Object Storage Class Changed",
    ]
    assert pattern["detail"] == {"bucket": {"name": [ref(bucket_id)]}}
    (target,) = rule["Properties"]["Targets"]
    queue_id = target["Arn"]["Fn::GetAtt"][0]
    queue = production.template.to_json()["Resources"][queue_id]
    assert queue["Type"] == "AWS::SQS::Queue" and "KmsMasterKeyId" in queue["Properties"]
    # And that queue feeds the storage_events function
    production.template.has_resource_properties(
        "AWS::Lambda::EventSourceMapping",
        {"EventSourceArn": arn_of(queue_id), "FunctionResponseTypes": ["ReportBatchItemFailures"]},
    )


def test_only_the_restore_function_may_restore_objects_and_it_may_do_nothing_else_on_s3(
    production: Synthesized,
) -> None:
    # Given every IAM policy of the stack
    restore_grants = []
    for policy_id, policy in resources(production.template, "AWS::IAM::Policy").items():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            if "s3:RestoreObject" in actions:
                restore_grants.append((policy_id, actions))
    # Then exactly one grants RestoreObject, alone, to the function fed by the restore queue
    ((policy_id, actions),) = restore_grants
    assert actions == ["s3:RestoreObject"]
    (role,) = production.template.to_json()["Resources"][policy_id]["Properties"]["Roles"]
    functions = resources(
        production.template,
        "AWS::Lambda::Function",
        Match.object_like({"Role": {"Fn::GetAtt": [role["Ref"], "Arn"]}}),
    )
    (function,) = functions.values()
    assert function["Properties"]["Environment"]["Variables"]["POWERTOOLS_SERVICE_NAME"] == "restore-study"
    assert function["Properties"]["Environment"]["Variables"]["RESTORE_TIER"] == "Bulk"


def _role_of_service(synthesized: Synthesized, service: str) -> str:
    """The role of the Lambda function or listener task whose powertools service is ``service``."""
    for resource in resources(synthesized.template, "AWS::Lambda::Function").values():
        if (
            resource["Properties"].get("Environment", {}).get("Variables", {}).get("POWERTOOLS_SERVICE_NAME")
            == service
        ):
            return str(resource["Properties"]["Role"]["Fn::GetAtt"][0])
    for resource in resources(synthesized.template, "AWS::ECS::TaskDefinition").values():
        for container in resource["Properties"]["ContainerDefinitions"]:
            if {"Name": "POWERTOOLS_SERVICE_NAME", "Value": service} in container.get("Environment", []):
                return str(resource["Properties"]["TaskRoleArn"]["Fn::GetAtt"][0])
    raise AssertionError(f"no role for {service}")


def test_staging_tier_is_a_single_zone_directory_bucket_that_expires_what_nobody_released(
    production: Synthesized,
) -> None:
    # Given the production stack
    # When we look at the staging tier
    _, bucket = only(production.template, "AWS::S3Express::DirectoryBucket")
    props = bucket["Properties"]
    # Then it is an S3 Express One Zone bucket in one zone, encrypted
    assert props["DataRedundancy"] == "SingleAvailabilityZone"
    assert props["LocationName"].endswith("-az1")
    (encryption,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert encryption["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    # And staged instance copies nobody released expire (the indexer releases each one once indexed)
    (rule,) = props["LifecycleConfiguration"]["Rules"]
    assert rule["Status"] == "Enabled"
    assert rule["Prefix"] == "instances/"
    assert rule["ExpirationInDays"] >= 14  # longer than the copier's retries and the DLQ's retention


def test_only_the_listener_the_copier_and_the_indexer_reach_the_staging_tier(
    dev_with_tls: Synthesized,
) -> None:
    template = dev_with_tls.template
    bucket_id, _ = only(template, "AWS::S3Express::DirectoryBucket")
    reaching = set()
    for policy in resources(template, "AWS::IAM::Policy").values():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            if statement["Resource"] == arn_of(bucket_id):
                assert statement["Action"] == "s3express:CreateSession"
                reaching.update(role["Ref"] for role in policy["Properties"]["Roles"])
    assert reaching == {
        _role_of_service(dev_with_tls, service)
        for service in ("dicom-listener", "lock-instance", "index-instance")
    }


def test_the_listener_queues_copies_that_the_copier_writes_into_the_locked_bucket(
    production: Synthesized,
) -> None:
    template = production.template
    bucket_id, _ = archive_bucket(template)
    staging_id, _ = only(template, "AWS::S3Express::DirectoryBucket")
    # Given the copier function and the lock queue it consumes
    (function,) = (
        f
        for f in resources(template, "AWS::Lambda::Function").values()
        if f["Properties"].get("Environment", {}).get("Variables", {}).get("POWERTOOLS_SERVICE_NAME")
        == "lock-instance"
    )
    variables = function["Properties"]["Environment"]["Variables"]
    assert variables["STAGING_BUCKET"] == ref(staging_id)
    queue_url = variables["LOCK_QUEUE_URL"]
    queue_id = queue_url["Ref"]
    # Then the copier may put (with retention) into the locked bucket, and never delete there
    copier = statements_of_role(template, _role_of_service(production, "lock-instance"))
    locked_objects = {"Fn::Join": ["", [arn_of(bucket_id), "/*"]]}
    assert {"s3:PutObject", "s3:PutObjectRetention"} <= actions_on(copier, locked_objects)
    assert not any("Delete" in action for action in actions_on(copier, locked_objects))
    # And the listener may send to that queue and has the staging tier and the queue in its environment
    listener = statements_of_role(template, _role_of_service(production, "dicom-listener"))
    assert "sqs:SendMessage" in actions_on(listener, arn_of(queue_id))
    # And its dead letters are alarmed
    dlq_arn = template.to_json()["Resources"][queue_id]["Properties"]["RedrivePolicy"]["deadLetterTargetArn"]
    dlq_id = dlq_arn["Fn::GetAtt"][0]
    template.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        Match.object_like(
            {
                "Dimensions": Match.array_with(
                    [Match.object_like({"Value": Match.object_like({"Fn::GetAtt": [dlq_id, "QueueName"]})})]
                )
            }
        ),
    )


def test_the_retrievals_that_meet_nearline_instances_may_queue_their_study_restore(
    production: Synthesized,
) -> None:
    # Given the queue that feeds the restore function
    restore_role = _role_of_service(production, "restore-study")
    consumers = [
        m["Properties"]["EventSourceArn"]
        for m in resources(production.template, "AWS::Lambda::EventSourceMapping").values()
        if m["Properties"]["FunctionName"]["Ref"]
        in {
            fid
            for fid, f in resources(production.template, "AWS::Lambda::Function").items()
            if f["Properties"]["Role"]["Fn::GetAtt"][0] == restore_role
        }
    ]
    ((_, (queue_id, _)),) = [(c, c["Fn::GetAtt"]) for c in consumers]
    # When we look at who may send to it
    senders = set()
    for policy in resources(production.template, "AWS::IAM::Policy").values():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            targets = (
                statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
            )
            if "sqs:SendMessage" in actions and {"Fn::GetAtt": [queue_id, "Arn"]} in targets:
                senders |= {role["Ref"] for role in policy["Properties"]["Roles"]}
    # Then the DICOM listener (C-MOVE, C-GET) and the RAD-69 service may, each through its own role
    assert {
        _role_of_service(production, "dicom-listener"),
        _role_of_service(production, "xds-imaging"),
    } <= senders
