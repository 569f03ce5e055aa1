"""Lambda: register a study as an XDS-I.b manifest (registration queue -> here).

Thin by design: each message names a study; ``RegistrationService.register`` decides whether it is
due (stability time), registers a new version if its content changed and queues the IANs.
Failures are reported per message, so only they are retried (and reach the DLQ).
"""

from __future__ import annotations

import json
from typing import Any

from archive.config import Settings
from archive.data.models import bind_models
from archive.services.registration import RegistrationService
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

logger = Logger(service="register-study")
settings = Settings.from_env()
bind_models(settings)
service = RegistrationService.from_settings(settings)
processor = BatchProcessor(event_type=EventType.SQS)


def record_handler(record: SQSRecord) -> None:
    outcome = service.register(json.loads(record.body)["study_uid"])
    logger.info("registration", extra={k: v for k, v in vars(outcome).items() if v is not None})


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> Any:
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
