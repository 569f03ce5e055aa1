"""Security in the template: the Object-Locked audit bucket, the TLS secret, syslog forwarding, the
append-only disclosure log, the customers' mutual-TLS API and the IAM-only admin API."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from archive.config import TABLE_ENV
from aws_cdk.assertions import Match

from tests.infrastructure.conftest import SYSLOG_HOST, TRUSTSTORE_FILE, XDS_DOMAIN, Synthesized
from tests.infrastructure.template_queries import (
    actions_on,
    arn_of,
    audit_bucket,
    dicom_task_definition,
    objects_under,
    only,
    ref,
    resources,
    s3_grants,
    statements_of_role,
)


def _function(synthesized: Synthesized, service: str) -> tuple[str, dict[str, Any]]:
    variables = Match.object_like({"Variables": Match.object_like({"POWERTOOLS_SERVICE_NAME": service})})
    return only(synthesized.template, "AWS::Lambda::Function", Match.object_like({"Environment": variables}))


def _role_statements(synthesized: Synthesized, function: dict[str, Any]) -> list[dict[str, Any]]:
    return statements_of_role(synthesized.template, function["Properties"]["Role"]["Fn::GetAtt"][0])


def _all_statements(synthesized: Synthesized) -> list[dict[str, Any]]:
    return [
        statement
        for policy in resources(synthesized.template, "AWS::IAM::Policy").values()
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]


def _table_id(synthesized: Synthesized, logical_name: str) -> str:
    _, task = dicom_task_definition(synthesized.template)
    (container,) = task["Properties"]["ContainerDefinitions"]
    env = {e["Name"]: e["Value"] for e in container["Environment"]}
    table_id: str = env[TABLE_ENV[logical_name]]["Ref"]
    return table_id


def test_audit_bucket_is_object_locked_for_the_retention_of_log_data(
    production: Synthesized, dev_with_tls: Synthesized
) -> None:
    _, bucket = audit_bucket(production.template)
    props = bucket["Properties"]
    retention = props["ObjectLockConfiguration"]["Rule"]["DefaultRetention"]
    assert retention == {"Mode": "COMPLIANCE", "Days": 4383}
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    assert (
        props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"][
            "SSEAlgorithm"
        ]
        == "aws:kms"
    )
    assert props["PublicAccessBlockConfiguration"]["RestrictPublicBuckets"] is True
    assert bucket["DeletionPolicy"] == "Retain"
    # A dev stack's audit bucket follows its GOVERNANCE mode
    _, dev = audit_bucket(dev_with_tls.template)
    assert dev["Properties"]["ObjectLockConfiguration"]["Rule"]["DefaultRetention"]["Mode"] == "GOVERNANCE"


def test_no_role_may_delete_unlock_or_rewrite_audit_objects(dev_with_tls: Synthesized) -> None:
    audit_id, _ = audit_bucket(dev_with_tls.template)
    forbidden = {
        (action, json.dumps(resource))
        for action, resource in s3_grants(_all_statements(dev_with_tls))
        if audit_id in json.dumps(resource)
        and any(word in action for word in ("Delete", "Retention", "LegalHold", "Bypass", "PutBucket", "*"))
    }
    assert forbidden == set()


def test_listeners_and_patient_updates_only_create_audit_batches(production: Synthesized) -> None:
    audit_id, _ = audit_bucket(production.template)
    _, task = dicom_task_definition(production.template)
    statements = statements_of_role(production.template, task["Properties"]["TaskRoleArn"]["Fn::GetAtt"][0])
    audit_grants = [g for g in s3_grants(statements) if audit_id in json.dumps(g[1])]
    assert audit_grants == [("s3:PutObject", objects_under(audit_id, "audit/"))]


def test_tls_secret_is_encrypted_with_its_own_key_and_read_by_the_listeners(
    dev_with_tls: Synthesized,
) -> None:
    (secret_id, secret), *others = resources(dev_with_tls.template, "AWS::SecretsManager::Secret").items()
    assert not others
    key_id = secret["Properties"]["KmsKeyId"]["Fn::GetAtt"][0]
    assert dev_with_tls.template.to_json()["Resources"][key_id]["Properties"]["EnableKeyRotation"] is True
    for port in (2762, 2575):
        container = Match.object_like({"PortMappings": [Match.object_like({"ContainerPort": port})]})
        _, task = only(
            dev_with_tls.template,
            "AWS::ECS::TaskDefinition",
            Match.object_like({"ContainerDefinitions": [container]}),
        )
        statements = statements_of_role(
            dev_with_tls.template, task["Properties"]["TaskRoleArn"]["Fn::GetAtt"][0]
        )
        assert "secretsmanager:GetSecretValue" in actions_on(statements, ref(secret_id)), port


def test_syslog_forwarding_is_configured_where_audit_messages_are_made(
    production: Synthesized, dev_with_tls: Synthesized
) -> None:
    _, task = dicom_task_definition(dev_with_tls.template)
    (container,) = task["Properties"]["ContainerDefinitions"]
    env = {e["Name"]: e["Value"] for e in container["Environment"]}
    assert (env["AUDIT_SYSLOG_HOST"], env["AUDIT_SYSLOG_PORT"]) == (SYSLOG_HOST, "6514")
    _, function = _function(dev_with_tls, "patient-update")
    assert function["Properties"]["Environment"]["Variables"]["AUDIT_SYSLOG_HOST"] == SYSLOG_HOST
    _, task = dicom_task_definition(production.template)
    (container,) = task["Properties"]["ContainerDefinitions"]
    assert "AUDIT_SYSLOG_HOST" not in {e["Name"] for e in container["Environment"]}


def test_the_disclosure_log_is_append_only_for_every_role(dev_with_tls: Synthesized) -> None:
    table_id = _table_id(dev_with_tls, "disclosure_log")
    granted = actions_on(_all_statements(dev_with_tls), arn_of(table_id))
    assert "dynamodb:PutItem" in granted
    assert not granted & {"dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem"}


def test_customer_api_is_reachable_only_through_its_mutual_tls_domain(dev_with_tls: Synthesized) -> None:
    template = dev_with_tls.template
    _, domain = only(template, "AWS::ApiGateway::DomainName")
    props = domain["Properties"]
    assert props["DomainName"] == XDS_DOMAIN
    assert props["SecurityPolicy"] == "TLS_1_2"
    truststore = json.dumps(props["MutualTlsAuthentication"]["TruststoreUri"])
    # The CA bundle given as xdsTruststoreFile, under a key derived from its content (a changed
    # bundle is a new key, so the domain is updated and API Gateway reads the new truststore)
    digest = hashlib.sha256(TRUSTSTORE_FILE.read_bytes()).hexdigest()[:16]
    assert (
        truststore.startswith('{"Fn::Join": ["", ["s3://", {"Ref"')
        and f"truststore-{digest}.pem" in truststore
    )
    bucket_id = props["MutualTlsAuthentication"]["TruststoreUri"]["Fn::Join"][1][1]["Ref"]
    assert template.to_json()["Resources"][bucket_id]["Properties"]["VersioningConfiguration"] == {
        "Status": "Enabled"
    }
    # And CDK deploys it there before the domain reads it, keeping earlier bundles
    deployment_id, deployment = only(template, "Custom::CDKBucketDeployment")
    assert deployment["Properties"]["DestinationBucketName"] == {"Ref": bucket_id}
    assert (
        deployment["Properties"].get("Prune") is False and deployment["Properties"]["RetainOnDelete"] is True
    )
    domain_id, _ = only(template, "AWS::ApiGateway::DomainName")
    assert deployment_id in template.to_json()["Resources"][domain_id].get("DependsOn", [])
    (api_id, api), *_ = resources(
        template, "AWS::ApiGateway::RestApi", Match.object_like({"DisableExecuteApiEndpoint": True})
    ).items()
    _, method = only(
        template,
        "AWS::ApiGateway::Method",
        Match.object_like({"HttpMethod": "POST", "RestApiId": ref(api_id)}),
    )
    assert method["Properties"]["RequestValidatorId"]
    assert api["Properties"]["Name"]


def test_notifications_may_append_to_the_log_and_read_the_index_only(dev_with_tls: Synthesized) -> None:
    _, function = _function(dev_with_tls, "disclosure-notification")
    statements = _role_statements(dev_with_tls, function)
    disclosure = _table_id(dev_with_tls, "disclosure_log")
    studies = _table_id(dev_with_tls, "studies")
    assert "dynamodb:PutItem" in actions_on(statements, arn_of(disclosure))
    assert not {"dynamodb:PutItem", "dynamodb:UpdateItem"} & actions_on(statements, arn_of(studies))


def test_admin_api_takes_only_iam_signed_requests(production: Synthesized) -> None:
    methods = resources(
        production.template, "AWS::ApiGateway::Method", Match.object_like({"HttpMethod": "GET"})
    )
    assert len(methods) == 2
    assert {m["Properties"]["AuthorizationType"] for m in methods.values()} == {"AWS_IAM"}
    # And without xdsDomainName there is no customer API at all
    assert not resources(production.template, "AWS::ApiGateway::DomainName")


def test_chain_heads_are_anchored_hourly_by_a_function_that_may_only_create_anchors(
    production: Synthesized,
) -> None:
    function_id, function = _function(production, "disclosure-anchor")
    _, rule = only(
        production.template, "AWS::Events::Rule", Match.object_like({"ScheduleExpression": "rate(1 hour)"})
    )
    assert rule["Properties"]["Targets"][0]["Arn"] == arn_of(function_id)
    audit_id, _ = audit_bucket(production.template)
    grants = {
        action
        for action, resource in s3_grants(_role_statements(production, function))
        if audit_id in json.dumps(resource)
    }
    assert grants == {"s3:PutObject", "s3:GetObject", "s3:ListBucket"}
    assert objects_under(audit_id, "disclosure-anchors/") in [
        r for a, r in s3_grants(_role_statements(production, function)) if a == "s3:PutObject"
    ]
