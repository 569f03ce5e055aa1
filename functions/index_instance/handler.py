"""Lambda: index stored DICOM objects (S3 ObjectCreated -> SQS -> here).

Thin by design: parse the SQS batch, call archive.services.indexing for each S3 record, report partial
batch failures so only failed messages are retried (and reach the DLQ after maxReceiveCount).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote_plus

from archive.config import Settings
from archive.data.index import IndexRepository
from archive.data.models import bind_models
from archive.data.objects import ObjectStore
from archive.services.indexing import index_object
from archive.services.registration import RegistrationRequests
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

logger = Logger(service="index-instance")
settings = Settings.from_env()
bind_models(settings)
objects = ObjectStore(settings)
# The staging tier (docs/storage.md): its copy of an instance is released once indexed.
staging = ObjectStore(settings, bucket=settings.staging_bucket) if settings.staging_bucket else None
index = IndexRepository(settings)
registration = RegistrationRequests.from_settings(settings) if settings.registration_queue_url else None
processor = BatchProcessor(event_type=EventType.SQS)


def record_handler(record: SQSRecord) -> None:
    body = json.loads(record.body)
    for s3_record in body.get("Records", []):  # an s3:TestEvent has none
        obj = s3_record["s3"]["object"]
        outcome = index_object(unquote_plus(obj["key"]), obj.get("versionId"), objects, index, staging)
        logger.info(
            "indexed", extra={"key": outcome.key, "new": outcome.indexed, "bytes_read": outcome.bytes_read}
        )
        if outcome.indexed and registration is not None and outcome.study_uid:
            registration.study_changed(outcome.study_uid, outcome.org_oid)


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> Any:
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
