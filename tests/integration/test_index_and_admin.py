"""The index Lambda is idempotent under redelivery; the admin CLI manages the registry."""

from __future__ import annotations

import json

from archive.data.models import Study

from local.cloud import LocalCloud
from local.resources import BUCKET, client
from tests.support.cloud import admin_cli, json_lines, wait_until
from tests.support.dicom import ct_dataset
from tests.support.scu import Modality


def test_redelivered_s3_event_changes_nothing(cloud: LocalCloud) -> None:
    # Given a stored and indexed instance
    ds = ct_dataset()
    modality = Modality(cloud.dicom_port)
    try:
        assert modality.store(ds) == 0
    finally:
        modality.release()
    study = wait_until(lambda: (s := Study.get(ds.StudyInstanceUID)) and s.number_of_instances == 1 and s)
    before = (study.number_of_instances, study.number_of_series, study.total_bytes)
    # When the same S3 ObjectCreated notification arrives again (SQS delivers at least once)
    from archive.data.objects import instance_key

    s3 = client("s3", cloud.endpoint)
    head = s3.head_object(Bucket=BUCKET, Key=instance_key(ds.SOPInstanceUID))
    event = {
        "Records": [
            {
                "eventSource": "aws:s3",
                "eventName": "ObjectCreated:Put",
                "s3": {
                    "bucket": {"name": BUCKET},
                    "object": {
                        "key": instance_key(ds.SOPInstanceUID),
                        "versionId": head["VersionId"],
                        "size": head["ContentLength"],
                    },
                },
            }
        ]
    }
    sqs = client("sqs", cloud.endpoint)
    for _ in range(2):
        sqs.send_message(QueueUrl=cloud.queues["index"].url, MessageBody=json.dumps(event))
    cloud.drain()
    # Then the study's aggregates are unchanged and nothing went to the DLQ
    after = Study.get(ds.StudyInstanceUID)
    assert (after.number_of_instances, after.number_of_series, after.total_bytes) == before
    dlq = sqs.get_queue_attributes(
        QueueUrl=cloud.queues["index"].dlq_url, AttributeNames=["ApproximateNumberOfMessages"]
    )
    assert dlq["Attributes"]["ApproximateNumberOfMessages"] == "0"


_admin = admin_cli


def test_admin_cli_adds_lists_and_removes_organisations_and_aes(cloud: LocalCloud) -> None:
    oid = "1.2.246.10.55555555.10"
    assert _admin(cloud, "org", "add", oid, "CLI Clinic", "--trusted-issuer", "1.2.246.21").returncode == 0
    added = _admin(
        cloud, "ae", "add", "CLI_PACS", oid, "127.0.0.1", "11199", "--role", "store", "--role", "query"
    )
    assert added.returncode == 0, added.stderr
    listed = json_lines(_admin(cloud, "ae", "list", "--org", oid).stdout)
    assert listed == [
        {
            "ae_title": "CLI_PACS",
            "org_oid": oid,
            "host": "127.0.0.1",
            "port": 11199,
            "tls": False,
            "roles": ["store", "query"],
            "description": None,
            "addresses": ["127.0.0.1/32"],
            "certificate_names": [],
        }
    ]
    # A registered AE may associate at once
    from tests.support.cloud import dcmtk

    assert (
        dcmtk("echoscu", "-aet", "CLI_PACS", "-aec", "ARCHIVE", "127.0.0.1", str(cloud.dicom_port)).returncode
        == 0
    )
    # An organisation with AEs cannot be removed; a duplicate is refused; an unknown role too
    assert _admin(cloud, "org", "remove", oid).returncode == 1
    assert "exists" in _admin(cloud, "ae", "add", "CLI_PACS", oid, "127.0.0.1", "1").stderr
    assert _admin(cloud, "ae", "add", "X", oid, "h", "1", "--role", "admin").returncode == 2
    # The addresses an AE may call from: given, as networks, or resolved from host names now
    added = _admin(
        cloud,
        "ae",
        "add",
        "CLI_MOD",
        oid,
        "localhost",
        "104",
        "--address",
        "10.1.2.0/28",
        "--address",
        "192.0.2.7",
    )
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["addresses"] == ["10.1.2.0/28", "192.0.2.7/32"]
    added = _admin(cloud, "ae", "add", "CLI_MOD", oid, "localhost", "104", "--replace")
    assert "127.0.0.1/32" in json.loads(added.stdout)["addresses"]
    assert _admin(cloud, "ae", "remove", "CLI_MOD").returncode == 0
    assert _admin(cloud, "ae", "remove", "CLI_PACS").returncode == 0
    assert _admin(cloud, "org", "remove", oid).returncode == 0
    assert oid not in _admin(cloud, "org", "list").stdout


def test_indexing_reads_only_the_header_of_a_large_object(cloud: LocalCloud) -> None:
    # Given an 8 MB image stored in the archive
    from archive.data.index import IndexRepository
    from archive.data.objects import ObjectStore, instance_key
    from archive.services.indexing import index_object

    ds = ct_dataset(rows=2048, columns=2048)
    modality = Modality(cloud.dicom_port)
    try:
        assert modality.store(ds) == 0
    finally:
        modality.release()
    assert cloud.settings is not None
    objects = ObjectStore(cloud.settings)
    # (acknowledged from the staging tier: the locked copy follows within moments)
    size = wait_until(lambda: objects.head(instance_key(ds.SOPInstanceUID)), timeout=60).size
    assert size > 8_000_000
    wait_until(lambda: (s := Study.get(ds.StudyInstanceUID)) and s.number_of_instances == 1)
    # When the index handler's core runs on it again (a redelivery)
    outcome = index_object(instance_key(ds.SOPInstanceUID), None, objects, IndexRepository(cloud.settings))
    # Then it fetched one 64 KB block, not the pixel data, and changed nothing
    assert 0 < outcome.bytes_read <= 64 * 1024
    assert outcome.indexed is False
    assert Study.get(ds.StudyInstanceUID).number_of_instances == 1
