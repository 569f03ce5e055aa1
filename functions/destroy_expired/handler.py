"""Lambda: destroy studies whose retention has ended (EventBridge Scheduler, daily).

Thin by design: the whole job is archive.services.destruction. An operator may invoke it with
{"approved_by": "<name>"} to record an approval.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from archive.config import Settings
from archive.data.destruction import DestructionRepository
from archive.data.models import bind_models
from archive.data.objects import ObjectStore
from archive.data.registration import RegistryRemovals
from archive.data.retention import RetentionRepository
from archive.data.xds_registry import XdsRegistry
from archive.services.audit import build_audit_trail
from archive.services.destruction import DestructionService, RegistryPolicy
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

logger = Logger(service="destroy-expired")
settings = Settings.from_env()
bind_models(settings)
audit_trail = build_audit_trail(settings, background=False)
service = DestructionService(
    RetentionRepository(),
    DestructionRepository(),
    ObjectStore(settings),
    audit_trail=audit_trail,
    registry=RegistryPolicy(
        XdsRegistry(settings), RegistryRemovals(), timedelta(seconds=settings.registry_removal_seconds)
    ),
)


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, object]:
    try:
        run = service.run(approved_by=event.get("approved_by"))
    finally:
        audit_trail.flush()
    summary = run.summary()
    logger.info("destruction run", extra=summary)
    return summary
