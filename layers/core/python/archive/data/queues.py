"""Data access for queues: the SQS FIFO queue between the MLLP listener and the patient_update Lambda."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import boto3
from botocore.config import Config

from archive.config import Settings
from archive.errors import MessageTooLargeToKeep, QueueFailure
from archive.model.staging import LockRequest

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


class LockQueue:
    """The SQS queue of staged instances to copy into the Object-Locked bucket (lock_instance)."""

    def __init__(self, settings: Settings, queue_url: str | None = None) -> None:
        url = queue_url or settings.lock_queue_url
        if not url:
            raise RuntimeError("missing configuration: the lock queue URL")
        self._url = url
        # One client for the process: creating one costs far more than a request. Its pool as large
        # as the S3 client's: every concurrent C-STORE sends one message (botocore's default is 10).
        self._sqs = boto3.client(
            "sqs",
            region_name=settings.region,
            endpoint_url=settings.endpoint_url,
            config=Config(max_pool_connections=32),
        )

    def request(self, request: LockRequest) -> None:
        """Returns once SQS has the message durably; raises QueueFailure otherwise."""
        try:
            self._sqs.send_message(QueueUrl=self._url, MessageBody=json.dumps(request.message()))
        except Exception as exc:  # botocore's errors are many; any of them means "not queued"
            raise QueueFailure(f"could not queue the copy of {request.key}: {exc}") from exc

    def retry_later(self, receipt_handle: str, seconds: float) -> None:
        """The message comes back after ``seconds`` (at most 12 hours)."""
        self._sqs.change_message_visibility(
            QueueUrl=self._url,
            ReceiptHandle=receipt_handle,
            VisibilityTimeout=max(0, min(43200, int(seconds))),
        )
