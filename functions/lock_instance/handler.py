"""Lambda: copy each staged instance into the Object-Locked bucket (lock queue -> here).

Thin by design: parse the message, call archive.services.locking, and on failure hide the message
for a backoff that doubles with each receive (up to 15 minutes), so an outage of the locked bucket
is retried for hours before the message reaches the dead-letter queue (alarmed). The copy is
idempotent: a redelivered message finds the verified locked copy and changes nothing.
"""

from __future__ import annotations

import json
from typing import Any

from archive.config import Settings
from archive.data.objects import ObjectStore
from archive.data.queues import LockQueue
from archive.model.staging import LockRequest
from archive.services.locking import Locker
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

MAX_BACKOFF_SECONDS = 900

logger = Logger(service="lock-instance")
settings = Settings.from_env()
if not settings.staging_bucket:
    raise RuntimeError("missing configuration: STAGING_BUCKET")
locker = Locker(staging=ObjectStore(settings, bucket=settings.staging_bucket), archive=ObjectStore(settings))
queue = LockQueue(settings)
processor = BatchProcessor(event_type=EventType.SQS)


def record_handler(record: SQSRecord) -> None:
    request = LockRequest.from_message(json.loads(record.body))
    attempt = int(record.attributes.approximate_receive_count or 1)
    try:
        outcome = locker.lock(request)
    except Exception as exc:
        queue.retry_later(record.receipt_handle, min(MAX_BACKOFF_SECONDS, 2**attempt))
        logger.warning("not locked yet", extra={"key": request.key, "attempt": attempt, "error": str(exc)})
        raise
    logger.debug("locked", extra={"key": request.key, "outcome": outcome.value})


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> Any:
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
