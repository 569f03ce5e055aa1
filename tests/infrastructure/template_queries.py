"""Finding resources in a synthesized template by what they are, never by their logical IDs."""

from __future__ import annotations

from typing import Any

from aws_cdk.assertions import Match, Template

Resource = dict[str, Any]


def resources(template: Template, resource_type: str, properties: Any = None) -> dict[str, Resource]:
    """Logical ID -> resource, for every resource of a type (whose properties match, if given)."""
    found = template.find_resources(
        resource_type, {"Properties": properties} if properties is not None else None
    )
    return {logical_id: dict(resource) for logical_id, resource in found.items()}


def only(template: Template, resource_type: str, properties: Any = None) -> tuple[str, Resource]:
    """The single resource of a type matching ``properties``; fails if there are none or several."""
    found = resources(template, resource_type, properties)
    assert len(found) == 1, f"expected one {resource_type} matching {properties}, found {sorted(found)}"
    return next(iter(found.items()))


def _locked_bucket(template: Template, log_prefix: str) -> tuple[str, Resource]:
    return only(
        template,
        "AWS::S3::Bucket",
        Match.object_like(
            {
                "ObjectLockEnabled": True,
                "LoggingConfiguration": Match.object_like({"LogFilePrefix": log_prefix}),
            }
        ),
    )


def archive_bucket(template: Template) -> tuple[str, Resource]:
    """The bucket that stores DICOM objects: Object-Locked, its access logs under archive-bucket/."""
    return _locked_bucket(template, "archive-bucket/")


def audit_bucket(template: Template) -> tuple[str, Resource]:
    """The audit trail's bucket: Object-Locked, its access logs under audit-bucket/."""
    return _locked_bucket(template, "audit-bucket/")


def s3_grants(statements: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    """Every (S3 action, resource) the statements allow."""
    out = []
    for statement in statements:
        if statement.get("Effect") != "Allow":
            continue
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        targets = (
            statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        )
        out.extend((a, t) for a in actions if a.startswith("s3:") for t in targets)
    return out


def objects_under(bucket_logical_id: str, prefix: str) -> dict[str, Any]:
    """``<bucket ARN>/<prefix>*`` as CDK renders it."""
    return {"Fn::Join": ["", [arn_of(bucket_logical_id), f"/{prefix}*"]]}


def index_function(template: Template) -> tuple[str, Resource]:
    """The Lambda function behind the handler of functions/index_instance."""
    service = Match.object_like(
        {"Variables": Match.object_like({"POWERTOOLS_SERVICE_NAME": "index-instance"})}
    )
    return only(
        template,
        "AWS::Lambda::Function",
        Match.object_like({"Handler": "handler.handler", "Environment": service}),
    )


def index_queue(template: Template) -> tuple[str, Resource]:
    """The queue the archive bucket notifies of new objects (standard, with a redrive policy)."""
    notified = {
        config["QueueArn"]["Fn::GetAtt"][0]
        for notification in resources(template, "Custom::S3BucketNotifications").values()
        for config in notification["Properties"]["NotificationConfiguration"].get("QueueConfigurations", [])
    }
    queues = resources(
        template,
        "AWS::SQS::Queue",
        Match.object_like({"RedrivePolicy": Match.any_value(), "FifoQueue": Match.absent()}),
    )
    found = {logical_id: queue for logical_id, queue in queues.items() if logical_id in notified}
    assert len(found) == 1, f"expected one notified queue, found {sorted(found)}"
    return next(iter(found.items()))


def dicom_task_definition(template: Template) -> tuple[str, Resource]:
    """The DICOM listener's task: its container listens on 11112 (plain) or 2762 (TLS)."""
    found = {}
    for port in (11112, 2762):
        container = Match.object_like({"PortMappings": [Match.object_like({"ContainerPort": port})]})
        found.update(
            resources(
                template, "AWS::ECS::TaskDefinition", Match.object_like({"ContainerDefinitions": [container]})
            )
        )
    assert len(found) == 1, sorted(found)
    return next(iter(found.items()))


def ref(logical_id: str) -> dict[str, str]:
    return {"Ref": logical_id}


def arn_of(logical_id: str) -> dict[str, list[str]]:
    return {"Fn::GetAtt": [logical_id, "Arn"]}


def statements_of_role(template: Template, role_logical_id: str) -> list[dict[str, Any]]:
    """Every statement of the inline policies attached to a role."""
    policies = resources(
        template, "AWS::IAM::Policy", Match.object_like({"Roles": Match.array_with([ref(role_logical_id)])})
    )
    return [
        statement
        for policy in policies.values()
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]


def actions_on(statements: list[dict[str, Any]], resource: Any) -> set[str]:
    """The actions the statements allow on ``resource`` (compared as CloudFormation values)."""
    allowed: set[str] = set()
    for statement in statements:
        if statement.get("Effect") != "Allow":
            continue
        targets = (
            statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        )
        if resource in targets:
            actions = statement["Action"]
            allowed.update([actions] if isinstance(actions, str) else actions)
    return allowed


def all_actions(statements: list[dict[str, Any]]) -> set[str]:
    allowed: set[str] = set()
    for statement in statements:
        actions = statement["Action"]
        allowed.update([actions] if isinstance(actions, str) else actions)
    return allowed


def objects_of(bucket_logical_id: str) -> dict[str, Any]:
    """``<bucket ARN>/*`` as CDK renders it."""
    return {"Fn::Join": ["", [arn_of(bucket_logical_id), "/*"]]}
