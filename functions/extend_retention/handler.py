"""Lambda: one page of a retention job (retention queue -> here; docs/retention.md).

A job lengthens what a grown rule covers, or recomputes a patient's studies after their death was
recorded (HL7 PID-29/30 or an operator). Each message is one bounded page; it queues the next.
"""

from __future__ import annotations

import json
from typing import Any

from archive.config import Settings
from archive.data.models import bind_models
from archive.data.objects import ObjectStore
from archive.data.retention import RetentionJobQueue
from archive.data.xds_registry import XdsRegistry
from archive.services.retention import RetentionService
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

logger = Logger(service="extend-retention")
settings = Settings.from_env()
bind_models(settings)
service = RetentionService.configured(
    settings,
    ObjectStore(settings),
    jobs=RetentionJobQueue(settings),
    page_objects=settings.retention_page_objects,
    registry=XdsRegistry(settings),  # the studies' manifests grow with them
)
processor = BatchProcessor(event_type=EventType.SQS)


def record_handler(record: SQSRecord) -> None:
    logger.info("retention job page", extra=service.run_job_page(json.loads(record.body)))


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> Any:
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
