"""The local stand-in's resources: the same bucket, tables and queues as the CDK stack.

Tables come from the pynamodb models (the single definition CDK also reads); the bucket gets
versioning, Object Lock and the ObjectCreated -> SQS notification, as deployed.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import boto3
from archive.config import Settings
from archive.data.models import ALL_MODELS, bind_models
from archive.data.objects import INSTANCE_PREFIX
from archive.data.schema import table_spec
from archive.topology import (
    IAN_QUEUE,
    INDEX_QUEUE,
    LOCK_QUEUE,
    QUEUES,
    REGISTRATION_QUEUE,
    RESTORE_QUEUE,
    RETENTION_QUEUE,
    STORAGE_EVENTS_QUEUE,
    TABLE_ENV,
    QueueSpec,
)

REGION = "eu-north-1"
BUCKET = "archive-local-images"
# The staging tier (docs/storage.md): named as an S3 Express One Zone directory bucket is
# (<base>--<zone id>--x-s3), so a latency profile can tell it from the locked bucket. moto serves
# it as a plain bucket and knows no CreateSession, hence AWS_S3_DISABLE_EXPRESS_SESSION_AUTH.
STAGING_BUCKET = "archive-local-staging--eun1-az1--x-s3"
LOCAL_TABLE_PREFIX = "archive-"
VISIBILITY_TIMEOUT = 30


@dataclass(frozen=True)
class QueueInfo:
    name: str
    url: str
    arn: str
    dlq_url: str


def local_table_names() -> dict[str, str]:
    """The physical table names of the local cloud (one per logical table of the topology)."""
    return {name: f"{LOCAL_TABLE_PREFIX}{name}" for name in TABLE_ENV}


def client(service: str, endpoint: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="local",
        aws_secret_access_key="local",  # noqa: S106 - moto accepts any credentials
    )


def local_settings(endpoint: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "region": REGION,
        "bucket": BUCKET,
        "tables": local_table_names(),
        "endpoint_url": endpoint,
        # The local bucket's default retention is GOVERNANCE; explicit locks follow it.
        "object_lock_mode": "GOVERNANCE",
    }
    values.update(overrides)
    return Settings(**values)


def local_queue_name(queue: QueueSpec) -> str:
    """The local cloud's name of a topology queue (the admin CLI finds its URL by it)."""
    return f"archive-{queue.name}{'.fifo' if queue.fifo else ''}"


def _create_queue(sqs: Any, name: str, attributes: dict[str, str]) -> str:
    """The queue's URL; a queue kept from an earlier start keeps its messages and gets these
    attributes (FIFO-ness cannot change)."""
    try:
        return str(sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"])
    except sqs.exceptions.QueueNameExists:
        url = str(sqs.get_queue_url(QueueName=name)["QueueUrl"])
        changeable = {k: v for k, v in attributes.items() if k not in ("FifoQueue",)}
        if changeable:
            sqs.set_queue_attributes(QueueUrl=url, Attributes=changeable)
        return url


def create_queues(
    endpoint: str, *, max_receive: dict[str, int] | None = None, visibility: dict[str, int] | None = None
) -> dict[str, QueueInfo]:
    """Every queue of the topology with its DLQ; ``max_receive`` and ``visibility`` override the
    topology's receive counts and the default visibility timeout per queue."""
    sqs = client("sqs", endpoint)
    out = {}
    for queue in QUEUES:
        name, fifo = queue.name, queue.fifo
        max_receive_count = (max_receive or {}).get(name, queue.max_receive_count)
        visibility_timeout = (visibility or {}).get(name, VISIBILITY_TIMEOUT)
        suffix = ".fifo" if fifo else ""
        fifo_attrs = {"FifoQueue": "true", "ContentBasedDeduplication": "false"} if fifo else {}
        dlq_url = _create_queue(sqs, f"archive-{name}-dlq{suffix}", fifo_attrs)
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        url = _create_queue(
            sqs,
            local_queue_name(queue),
            {
                **fifo_attrs,
                "VisibilityTimeout": str(visibility_timeout),
                "RedrivePolicy": f'{{"deadLetterTargetArn":"{dlq_arn}","maxReceiveCount":"{max_receive_count}"}}',
            },
        )
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        out[name] = QueueInfo(name, url, arn, dlq_url)
    return out


def _create_locked_bucket(s3: Any, name: str) -> bool:
    """A versioned bucket with Object Lock; False if it was kept from an earlier start (then its
    configuration stays as it is: S3 refuses to change the lock configuration of a bucket with
    objects)."""
    try:
        s3.create_bucket(
            Bucket=name,
            ObjectLockEnabledForBucket=True,
            CreateBucketConfiguration={"LocationConstraint": REGION},
        )
    except s3.exceptions.BucketAlreadyOwnedByYou:
        return False
    return True


def create_bucket(endpoint: str, index_queue_arn: str, retention_days: int) -> None:
    s3 = client("s3", endpoint)
    if not _create_locked_bucket(s3, BUCKET):
        return
    s3.put_object_lock_configuration(
        Bucket=BUCKET,
        ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            # GOVERNANCE for a developer's machine; production stacks use COMPLIANCE (see CDK).
            "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": retention_days}},
        },
    )
    s3.put_bucket_notification_configuration(
        Bucket=BUCKET,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "QueueArn": index_queue_arn,
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": INSTANCE_PREFIX}]}},
                }
            ]
        },
    )


def create_staging_bucket(endpoint: str) -> str:
    """The landing tier: no versioning, no Object Lock, no notification (a directory bucket has
    none of them; the listener queues each copy itself). A kept local cloud (``make run`` after a
    stop) has it already, with the copies that were in flight."""
    s3 = client("s3", endpoint)
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(
            Bucket=STAGING_BUCKET,
            CreateBucketConfiguration={"LocationConstraint": REGION},  # type: ignore[typeddict-item]
        )
    return STAGING_BUCKET


def create_tables(settings: Settings) -> None:
    bind_models(settings)
    for model in ALL_MODELS:
        if not model.exists():
            model.create_table(billing_mode="PAY_PER_REQUEST", wait=True)
        else:
            _add_missing_indexes(settings, model)


def _add_missing_indexes(settings: Settings, model: Any) -> None:
    """A table kept from an earlier start gets the secondary indexes added since (one per update,
    as DynamoDB allows; docs/deployment.md)."""
    dynamodb = client("dynamodb", settings.endpoint_url or "")
    name = model.Meta.table_name
    present = {
        i["IndexName"]
        for i in dynamodb.describe_table(TableName=name)["Table"].get("GlobalSecondaryIndexes", [])
    }
    for index in table_spec(model).indexes:
        if index.name in present:
            continue
        keys = [index.partition_key, *([index.sort_key] if index.sort_key else [])]
        dynamodb.update_table(
            TableName=name,
            AttributeDefinitions=[{"AttributeName": k.name, "AttributeType": k.type} for k in keys],
            GlobalSecondaryIndexUpdates=[
                {
                    "Create": {
                        "IndexName": index.name,
                        "KeySchema": [
                            {"AttributeName": k.name, "KeyType": kind}
                            for k, kind in zip(keys, ("HASH", "RANGE"), strict=False)
                        ],
                        "Projection": {"ProjectionType": index.projection},
                    }
                }
            ],
        )


def provision(
    endpoint: str, *, retention_days: int = 1, tls_secret_value: str | None = None, **overrides: Any
) -> tuple[Settings, dict[str, QueueInfo]]:
    defaults = Settings(region=REGION, bucket=BUCKET, tables={})
    attempts = int(overrides.get("ian_max_attempts", defaults.ian_max_attempts))
    timeout = float(overrides.get("ian_timeout_seconds", defaults.ian_timeout_seconds))
    queues = create_queues(
        endpoint,
        # The IAN queue dead-letters after the configured number of attempts, and an attempt
        # (connect, associate, N-CREATE) ends before its message shows again.
        max_receive={IAN_QUEUE.name: attempts},
        visibility={IAN_QUEUE.name: int(3 * timeout) + 2},
    )
    create_bucket(endpoint, queues[INDEX_QUEUE.name].arn, retention_days)
    overrides.setdefault("audit_bucket", create_audit_bucket(endpoint, retention_days))
    overrides.setdefault("staging_bucket", create_staging_bucket(endpoint))
    overrides.setdefault("lock_queue_url", queues[LOCK_QUEUE.name].url)
    if tls_secret_value is not None:
        overrides.setdefault("tls_secret_id", put_tls_secret(endpoint, tls_secret_value))
    settings = local_settings(
        endpoint,
        index_queue_url=queues[INDEX_QUEUE.name].url,
        registration_queue_url=queues[REGISTRATION_QUEUE.name].url,
        ian_queue_url=queues[IAN_QUEUE.name].url,
        storage_events_queue_url=queues[STORAGE_EVENTS_QUEUE.name].url,
        restore_queue_url=queues[RESTORE_QUEUE.name].url,
        retention_queue_url=queues[RETENTION_QUEUE.name].url,
        **overrides,
    )
    create_tables(settings)
    return settings, queues


AUDIT_BUCKET = "archive-local-audit"
TLS_SECRET = "archive-local-tls"  # noqa: S105 - the name of the secret, not a secret


def create_audit_bucket(endpoint: str, retention_days: int) -> str:
    """The audit bucket: Object Lock (GOVERNANCE locally; COMPLIANCE on AWS), versioned."""
    s3 = client("s3", endpoint)
    if not _create_locked_bucket(s3, AUDIT_BUCKET):
        return AUDIT_BUCKET
    s3.put_object_lock_configuration(
        Bucket=AUDIT_BUCKET,
        ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": retention_days}},
        },
    )
    return AUDIT_BUCKET


def put_tls_secret(endpoint: str, value: str) -> str:
    """The listeners' TLS material in (local) Secrets Manager, as on AWS; a new version if it exists."""
    secrets = client("secretsmanager", endpoint)
    try:
        secrets.create_secret(Name=TLS_SECRET, SecretString=value)
    except secrets.exceptions.ResourceExistsException:
        secrets.put_secret_value(SecretId=TLS_SECRET, SecretString=value)
    return TLS_SECRET
