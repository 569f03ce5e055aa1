#!/usr/bin/env python3
"""CDK app: ``python app.py`` or ``npx cdk synth``; see docs/deployment.md for the context flags."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# The stack derives its tables from the core package's models; the CDK CLI does not set PYTHONPATH.
sys.path.insert(0, str(Path(__file__).resolve().parent / "layers" / "core" / "python"))

from aws_cdk import App, Environment, Validations
from cdk_nag import AwsSolutionsChecks

from infrastructure.settings import DEFAULT_REGION, DeploymentSettings, cdk_json_context
from infrastructure.stack import ArchiveStack


def build_app(context: dict[str, object] | None = None) -> App:
    """The app with its one stack and cdk-nag's AWS Solutions checks."""
    # cdk.json's context (feature flags) first; the CLI's context and -c flags override it.
    app = App(context={**cdk_json_context(), **(context or {})})
    deployment = DeploymentSettings.from_context(app.node)
    ArchiveStack(
        app,
        deployment.stack_name,
        deployment=deployment,
        # A production archive is never deleted by accident; dev stacks may be.
        termination_protection=not deployment.is_dev,
        description="National archive for medical images (DICOM listener, Object-Locked store, index)",
        env=Environment(
            account=os.environ.get("CDK_DEFAULT_ACCOUNT"),
            region=os.environ.get("CDK_DEFAULT_REGION") or DEFAULT_REGION,
        ),
    )
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return app


if __name__ == "__main__":
    build_app().synth()
