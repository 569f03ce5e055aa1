"""Lambda: deliver one Instance Availability Notification per message (IAN queue -> here).

Thin by design. A failed attempt is reported as a batch item failure after the message's
visibility is set to the backoff (base x 2^(attempt-1)); the attempt number is SQS's receive
count, so a sender that crashed mid-delivery counts too. After the configured attempts the
notification is recorded FAILED and SQS moves the message to the dead-letter queue (alarmed).
"""

from __future__ import annotations

import json
from typing import Any

from archive.config import Settings
from archive.data.models import bind_models
from archive.errors import NotificationUndeliverable
from archive.model.registration import Notification
from archive.services.availability import AvailabilityService
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

logger = Logger(service="send-ian")
settings = Settings.from_env()
bind_models(settings)
service = AvailabilityService.from_settings(settings)
processor = BatchProcessor(event_type=EventType.SQS)


def record_handler(record: SQSRecord) -> None:
    notification = Notification.from_message(json.loads(record.body))
    attempt = int(record.attributes.approximate_receive_count or 1)
    try:
        service.deliver(notification, attempt=attempt)
    except NotificationUndeliverable as exc:
        backoff = service.failed(notification, attempt=attempt, error=str(exc))
        # Given up (None): visible again at once, so SQS moves it to the dead-letter queue now.
        service.retry_later(record.receipt_handle, backoff or 0)
        logger.warning(
            "IAN not delivered", extra={**notification.message(), "attempt": attempt, "error": str(exc)}
        )
        raise


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> Any:
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
