"""Data access for queues: the SQS FIFO queue between the MLLP listener and the patient_update Lambda."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import boto3

from archive.config import Settings
from archive.errors import QueueFailure


class PatientUpdateQueue:
    """The SQS FIFO queue from the MLLP listener to the patient_update Lambda."""

    def __init__(self, settings: Settings, queue_url: str) -> None:
        self._url = queue_url
        self._sqs = boto3.client("sqs", region_name=settings.region, endpoint_url=settings.endpoint_url)

    def put(self, body: Mapping[str, Any], *, group_id: str, deduplication_id: str) -> str:
        """Returns once SQS has the message durably; raises QueueFailure otherwise."""
        try:
            response = self._sqs.send_message(
                QueueUrl=self._url,
                MessageBody=json.dumps(body, ensure_ascii=False),
                MessageGroupId=group_id,
                MessageDeduplicationId=deduplication_id,
            )
        except Exception as exc:  # botocore's errors are many; any of them means "not queued"
            raise QueueFailure(f"could not queue the message: {exc}") from exc
        return str(response["MessageId"])
