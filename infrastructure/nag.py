"""Acknowledging cdk-nag findings, each with its reason, next to the resource it is about.

cdk-nag 3 reports through CDK's validation framework: an acknowledgment is recorded with
``Validations.of(construct).acknowledge`` and covers the construct and its children. Findings that
name a resource (IAM5 wildcards) are acknowledged one by one, by the exact finding id.
"""

from __future__ import annotations

from aws_cdk import Acknowledgment, CfnElement, Stack, Validations
from constructs import IConstruct


def acknowledge(scope: IConstruct, rule_id: str, reason: str, *, findings: tuple[str, ...] = ()) -> None:
    """Acknowledge ``rule_id`` on ``scope`` (or only the given findings of it), saying why."""
    if len(reason) < 20:
        raise ValueError(f"say why {rule_id} does not apply, in a sentence")
    ids = [f"{rule_id}[{finding}]" for finding in findings] if findings else [rule_id]
    Validations.of(scope).acknowledge(*(Acknowledgment(id=rule_id_, reason=reason) for rule_id_ in ids))


def arn_reference(resource: IConstruct) -> str:
    """How cdk-nag prints ``Fn::GetAtt <resource>.Arn`` in a finding, e.g. ``<Table1234.Arn>``."""
    cfn = resource.node.default_child if not isinstance(resource, CfnElement) else resource
    if not isinstance(cfn, CfnElement):
        raise TypeError(f"{resource.node.path} has no CloudFormation resource")
    return f"<{Stack.of(cfn).get_logical_id(cfn)}.Arn>"
