"""Data access for queues: the SQS FIFO queue between the MLLP listener and the patient_update Lambda."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import boto3

from archive.config import Settings
from archive.errors import MessageTooLargeToKeep, QueueFailure

# SQS takes 256 KiB per message and a history item (which keeps the message, twice for a merge's
# two identities in one transaction) 400 KB; a body under this fits both with room for the rest.
MAX_BODY_BYTES = 192 * 1024


class PatientUpdateQueue:
    """The SQS FIFO queue from the MLLP listener to the patient_update Lambda."""

    def __init__(self, settings: Settings, queue_url: str) -> None:
        self._url = queue_url
        self._sqs = boto3.client("sqs", region_name=settings.region, endpoint_url=settings.endpoint_url)

    def put(self, body: Mapping[str, Any], *, group_id: str, deduplication_id: str) -> str:
        """Returns once SQS has the message durably; raises QueueFailure otherwise.

        A body larger than ``MAX_BODY_BYTES`` raises MessageTooLargeToKeep before anything is sent.
        """
        text = json.dumps(body, ensure_ascii=False)
        size = len(text.encode())
        if size > MAX_BODY_BYTES:
            raise MessageTooLargeToKeep(
                f"the message needs {size} bytes queued; at most {MAX_BODY_BYTES} can be queued and kept"
            )
        try:
            response = self._sqs.send_message(
                QueueUrl=self._url,
                MessageBody=text,
                MessageGroupId=group_id,
                MessageDeduplicationId=deduplication_id,
            )
        except Exception as exc:  # botocore's errors are many; any of them means "not queued"
            raise QueueFailure(f"could not queue the message: {exc}") from exc
        return str(response["MessageId"])
