"""The local stand-in's saved state (``local/moto_state.py``) brings back what the archive relies
on: every object version with its body, retention and legal hold, delete refusal, GSI queries,
queued messages and secrets. moto runs in-process here; the whole ``make run`` path is
tests/integration/test_local_persistence.py."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from local import moto_state
from local.moto_server import install

REGION = "eu-north-1"


def _clients() -> tuple[object, object, object, object]:
    return tuple(boto3.client(s, region_name=REGION) for s in ("s3", "dynamodb", "sqs", "secretsmanager"))  # type: ignore[return-value]


@pytest.fixture(autouse=True)
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)


def test_a_saved_state_loads_back_whole(tmp_path: Path) -> None:
    install()
    until = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    # Given a locked bucket with two versions of a key, a table with a GSI, a queue, a secret
    with mock_aws():
        s3, ddb, sqs, secrets = _clients()
        s3.create_bucket(  # type: ignore[attr-defined]
            Bucket="kept-images",
            ObjectLockEnabledForBucket=True,
            CreateBucketConfiguration={"LocationConstraint": REGION},
        )
        v1 = s3.put_object(  # type: ignore[attr-defined]
            Bucket="kept-images",
            Key="k",
            Body=b"first",
            ObjectLockMode="COMPLIANCE",
            ObjectLockRetainUntilDate=until,
        )["VersionId"]
        v2 = s3.put_object(Bucket="kept-images", Key="k", Body=b"second")["VersionId"]  # type: ignore[attr-defined]
        s3.put_object_legal_hold(Bucket="kept-images", Key="k", VersionId=v2, LegalHold={"Status": "ON"})  # type: ignore[attr-defined]
        ddb.create_table(  # type: ignore[attr-defined]
            TableName="kept",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "g", "AttributeType": "S"},
            ],
            BillingMode="PAY_PER_REQUEST",
            GlobalSecondaryIndexes=[
                {
                    "IndexName": "by-g",
                    "KeySchema": [{"AttributeName": "g", "KeyType": "HASH"}],
                    "Projection": {"ProjectionType": "ALL"},
                }
            ],
        )
        ddb.transact_write_items(  # type: ignore[attr-defined]
            TransactItems=[
                {"Put": {"TableName": "kept", "Item": {"pk": {"S": p}, "g": {"S": "x"}}}} for p in "ab"
            ]
        )
        url = sqs.create_queue(QueueName="kept")["QueueUrl"]  # type: ignore[attr-defined]
        sqs.send_message(QueueUrl=url, MessageBody="queued")  # type: ignore[attr-defined]
        secrets.create_secret(Name="kept", SecretString="s3cret")  # type: ignore[attr-defined]
        # When the state is saved, and moto is reset (as a new process starts empty)
        moto_state.save(tmp_path)
    with mock_aws():
        s3, ddb, sqs, secrets = _clients()
        assert s3.list_buckets()["Buckets"] == []  # type: ignore[attr-defined]
        # And loaded again
        assert moto_state.load(tmp_path)
        # Then both versions are there with their bodies, lock and hold
        versions = s3.list_object_versions(Bucket="kept-images")["Versions"]  # type: ignore[attr-defined]
        assert {v["VersionId"] for v in versions} == {v1, v2}
        assert s3.get_object(Bucket="kept-images", Key="k", VersionId=v1)["Body"].read() == b"first"  # type: ignore[attr-defined]
        assert s3.get_object(Bucket="kept-images", Key="k")["Body"].read() == b"second"  # type: ignore[attr-defined]
        head = s3.head_object(Bucket="kept-images", Key="k", VersionId=v1)  # type: ignore[attr-defined]
        assert head["ObjectLockMode"] == "COMPLIANCE"
        assert (
            s3.get_object_legal_hold(Bucket="kept-images", Key="k", VersionId=v2)["LegalHold"]["Status"]
            == "ON"
        )  # type: ignore[attr-defined]
        with pytest.raises(ClientError):
            s3.delete_object(Bucket="kept-images", Key="k", VersionId=v1)  # type: ignore[attr-defined]
        # And the GSI answers, the message is queued, the secret is there
        found = ddb.query(  # type: ignore[attr-defined]
            TableName="kept",
            IndexName="by-g",
            KeyConditionExpression="g = :g",
            ExpressionAttributeValues={":g": {"S": "x"}},
        )
        assert sorted(i["pk"]["S"] for i in found["Items"]) == ["a", "b"]
        messages = sqs.receive_message(QueueUrl=sqs.get_queue_url(QueueName="kept")["QueueUrl"])["Messages"]  # type: ignore[attr-defined]
        assert [m["Body"] for m in messages] == ["queued"]
        assert secrets.get_secret_value(SecretId="kept")["SecretString"] == "s3cret"  # type: ignore[attr-defined]
        # And a new object stored after the load is saved beside the old bodies
        s3.put_object(Bucket="kept-images", Key="new", Body=b"third")  # type: ignore[attr-defined]
        moto_state.save(tmp_path)
    assert len(list((tmp_path / moto_state.OBJECTS_DIR).iterdir())) == 3
