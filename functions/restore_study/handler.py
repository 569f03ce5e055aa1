"""Lambda: restore one study from its cold storage class (restore queue -> here).

Each message names a study whose restore a retrieval or an operator opened; ``run_restore`` issues
RestoreObject (the configured tier and days) for each of its NEARLINE objects. Asking S3 again for
an object under restore changes nothing, so a redelivered message is harmless.
"""

from __future__ import annotations

import json
from typing import Any

from archive.config import Settings
from archive.data.models import bind_models
from archive.services.storage_tiers import StorageTiers
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

logger = Logger(service="restore-study")
settings = Settings.from_env()
bind_models(settings)
service = StorageTiers.from_settings(settings)
processor = BatchProcessor(event_type=EventType.SQS)


def record_handler(record: SQSRecord) -> None:
    study_uid = json.loads(record.body)["study_uid"]
    started = service.run_restore(study_uid)
    logger.info("study restore", extra={"study_uid": study_uid, "restores_started": started})


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> Any:
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
