"""Synthesizing the stack takes seconds, so each distinct context is synthesized once per session
and the modules share it through module-scoped fixtures. Bundling is skipped (no pip, no Docker):
the tests assert what the template says, not what the layer contains."""

from __future__ import annotations

import os

# Before the first aws_cdk import starts the jsii runtime, which prints a banner on Node 20.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import App, Stack
from aws_cdk.assertions import Template

from app import build_app

CERTIFICATE_ARN = "arn:aws:acm:eu-north-1:111122223333:certificate/0f6c1f4e-7b1d-4a57-9d1e-2b9a3c1d5e6f"


@dataclass(frozen=True)
class Synthesized:
    app: App
    stack: Stack
    template: Template


@cache
def _synthesize(context_items: tuple[tuple[str, Any], ...]) -> Synthesized:
    app = build_app({"aws:cdk:bundling-stacks": [], **dict(context_items)})
    (stack,) = (child for child in app.node.children if isinstance(child, Stack))
    return Synthesized(app=app, stack=stack, template=Template.from_stack(stack))


def synthesize(**context: Any) -> Synthesized:
    """The app built with this CDK context (cached: the same context is synthesized once)."""
    return _synthesize(tuple(sorted(context.items())))


@pytest.fixture(scope="module")
def production() -> Synthesized:
    """The defaults: a production stack, COMPLIANCE retention, listeners without TLS."""
    return synthesize()


XDS_DOMAIN = "xds.archive.example.org"
# A customer CA (certificate only, made with local.pki) for the truststore CDK deploys.
TRUSTSTORE_FILE = Path(__file__).resolve().parent / "customer-cas.pem"
SYSLOG_HOST = "audit.example.org"


@pytest.fixture(scope="module")
def dev_with_tls() -> Synthesized:
    """A dev stack with GOVERNANCE retention, TLS in the listeners, a public client network, audit
    forwarding over syslog and the customers' API on its mutual-TLS domain."""
    return synthesize(
        stage="dev-ci",
        objectLockMode="GOVERNANCE",
        retentionDays="30",
        listenerTls="true",
        clientCidrs="198.51.100.0/24",
        auditSyslogHost=SYSLOG_HOST,
        xdsDomainName=XDS_DOMAIN,
        xdsCertificateArn=CERTIFICATE_ARN,
        xdsTruststoreFile=str(TRUSTSTORE_FILE),
    )
