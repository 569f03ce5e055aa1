"""Lambda: follow S3's storage events in the index (storage-events queue -> here).

EventBridge sends the archive bucket's "Object Storage Class Changed", "Object Restore Completed"
and "Object Restore Expired" events to the queue (the local lifecycle simulation sends the same
events). ``StorageTiers.apply`` marks instances NEARLINE or ONLINE with their study's and series'
counts, once per event, and closes a study's restore (IAN to its requesters) when the last object
is back. Failures are reported per message, so only they are retried (and reach the DLQ).
"""

from __future__ import annotations

import json
from typing import Any

from archive.config import Settings
from archive.data.models import bind_models
from archive.model.tiers import StorageEvent
from archive.services.storage_tiers import StorageTiers
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

logger = Logger(service="storage-events")
settings = Settings.from_env()
bind_models(settings)
service = StorageTiers.from_settings(settings)
processor = BatchProcessor(event_type=EventType.SQS)


def record_handler(record: SQSRecord) -> None:
    event = StorageEvent.from_eventbridge(json.loads(record.body))
    outcome = service.apply(event)
    logger.info("storage event", extra={"kind": event.kind.value, "key": event.key, "outcome": outcome})


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> Any:
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
