"""The audit trail's durable store: batches of audit messages in the Object-Locked audit bucket.

A batch is one object ``audit/<YYYY>/<MM>/<DD>/<HH>/<UTC time>-<source>-<id>.jsonl``: one JSON
line per message with its time, event, outcome and the XML. Written with ``If-None-Match: *`` and a
SHA-256 checked by S3; the bucket's default Object Lock retention makes every batch immutable.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

import boto3
from botocore.config import Config

from archive.config import Settings
from archive.errors import StorageFailure

AUDIT_PREFIX = "audit/"


class AuditBucket:
    def __init__(self, settings: Settings, client: Any | None = None) -> None:
        if not settings.audit_bucket:
            raise ValueError("no audit bucket configured (AUDIT_BUCKET)")
        self._settings = settings
        self.bucket = settings.audit_bucket
        self._client = client

    @cached_property
    def client(self) -> Any:
        if self._client is not None:
            return self._client
        return boto3.client(
            "s3",
            region_name=self._settings.region,
            endpoint_url=self._settings.endpoint_url,
            config=Config(retries={"max_attempts": 8, "mode": "adaptive"}),
        )

    def put_batch(self, lines: list[bytes], *, source: str, now: datetime | None = None) -> str:
        """Write one batch (newline-delimited JSON records); returns its key."""
        now = (now or datetime.now(UTC)).astimezone(UTC)
        body = b"".join(line.rstrip(b"\n") + b"\n" for line in lines)
        safe_source = "".join(c if c.isalnum() or c in "-_" else "_" for c in source)[:32] or "archive"
        key = f"{AUDIT_PREFIX}{now:%Y/%m/%d/%H}/{now:%Y%m%dT%H%M%S.%f}Z-{safe_source}-{uuid.uuid4().hex[:12]}.jsonl"
        digest = base64.b64encode(hashlib.sha256(body).digest()).decode("ascii")
        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=body,
                ContentType="application/x-ndjson",
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=digest,
                IfNoneMatch="*",
            )
        except Exception as exc:
            raise StorageFailure(f"audit batch {key} not written: {exc}") from exc
        return key

    def keys(self, prefix: str = AUDIT_PREFIX) -> list[str]:
        """Every batch key under ``prefix`` (operators' reading, tests; never on a request path)."""
        paginator = self.client.get_paginator("list_objects_v2")
        return [
            item["Key"]
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix)
            for item in page.get("Contents", [])
        ]

    def read(self, key: str) -> bytes:
        return bytes(self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read())
