"""cdk-nag's AWS Solutions checks: no finding left unexplained, in any configuration."""

from __future__ import annotations

import pytest
from aws_cdk import Stack, Validations
from aws_cdk import aws_sqs as sqs
from cdk_nag import AwsSolutionsChecks

from app import build_app
from tests.infrastructure.conftest import Synthesized


def _findings(synthesized: Synthesized) -> list[str]:
    report = AwsSolutionsChecks(synthesized.app).validate_scope(synthesized.stack)
    return [
        f"{violation.rule_name} at {resource.construct_path}: {violation.description}"
        for violation in report.violations
        for resource in violation.violating_resources
    ]


def test_production_stack_has_no_unacknowledged_findings(production: Synthesized) -> None:
    assert _findings(production) == []


def test_internet_facing_tls_stack_has_no_unacknowledged_findings(dev_with_tls: Synthesized) -> None:
    assert _findings(dev_with_tls) == []


def test_every_acknowledgment_says_why(production: Synthesized) -> None:
    # Given every rule acknowledged anywhere in the stack
    acknowledged = {
        f"{construct.node.path}: {rule}": reason
        for construct in production.stack.node.find_all()
        for entry in construct.node.metadata
        if entry.type == Validations.ACKNOWLEDGED_RULES_METADATA_KEY
        for rule, reason in entry.data.items()
    }
    assert any("AwsSolutions" in key for key in acknowledged)

    # Then each carries a sentence of reasoning, not a placeholder
    short = {key: reason for key, reason in acknowledged.items() if len(reason.split()) < 8}
    assert short == {}


def test_the_app_fails_synth_on_a_new_finding() -> None:
    # Given the app as app.py builds it, and a queue added without TLS enforcement or a DLQ
    app = build_app({"aws:cdk:bundling-stacks": []})
    (stack,) = [child for child in app.node.children if isinstance(child, Stack)]
    sqs.Queue(stack, "CarelessQueue")

    # When it is synthesized
    # Then the AWS Solutions checks stop it
    with pytest.raises(RuntimeError, match=r"(?s)ValidationFailed.*CarelessQueue.*AwsSolutions-SQS4"):
        app.synth()
