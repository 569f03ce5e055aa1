"""The local stand-in's DynamoDB (``local/moto_server.py``): transactions roll back exactly as
DynamoDB's do (when one condition fails, none of the transaction's writes is there afterwards), and
a Query, which the stand-in answers from the asked-for partition or index key alone, answers what
the table holds after every kind of write."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

import pytest
from archive.data.models import Patient, PatientChange
from pynamodb.connection import Connection
from pynamodb.exceptions import DoesNotExist, TransactWriteError
from pynamodb.transactions import TransactWrite

from local.cloud import LocalCloud
from local.resources import client
from tests.support.hl7 import fresh_id


def test_a_cancelled_transaction_leaves_no_partial_write(cloud: LocalCloud) -> None:
    assert cloud.settings is not None
    now = datetime.now(UTC)
    # Given a patient with a name, and a second patient key that does not exist
    existing, missing = fresh_id("TX"), fresh_id("TX")
    Patient(existing, patient_id=existing, issuer="1.2.3", patient_name="Before^Name").save()
    connection = Connection(region=cloud.settings.region, host=cloud.settings.endpoint_url)
    # When one transaction renames the first, creates a history item, and checks a condition on
    # the second that fails
    history = PatientChange(
        existing,
        "x#1",
        event="A31",
        outcome="APPLIED",
        message_control_id="1",
        sender="S|F",
        org_oid="1.2",
        received_at=now,
        applied_at=now,
        message="MSH",
    )
    with pytest.raises(TransactWriteError), TransactWrite(connection=connection) as tx:
        tx.update(Patient(existing), actions=[Patient.patient_name.set("After^Name")])
        tx.save(history)
        tx.condition_check(Patient, missing, condition=Patient.patient_key.exists())
    # Then the rename is undone and the history item was never written
    assert Patient.get(existing, consistent_read=True).patient_name == "Before^Name"
    with pytest.raises(DoesNotExist):
        PatientChange.get(existing, "x#1", consistent_read=True)
    # And the same transaction is applied whole once its condition holds
    Patient(missing, patient_id=missing, issuer="1.2.3").save()
    with TransactWrite(connection=connection) as tx:
        tx.update(Patient(existing), actions=[Patient.patient_name.set("After^Name")])
        tx.save(history)
        tx.condition_check(Patient, missing, condition=Patient.patient_key.exists())
    assert Patient.get(existing, consistent_read=True).patient_name == "After^Name"
    assert PatientChange.get(existing, "x#1", consistent_read=True).outcome == "APPLIED"


def _query_all(ddb: Any, table: str, **kwargs: Any) -> tuple[list[tuple[str, str]], int, int]:
    """Every page of a Query: the (pk, sk) keys in order, and the summed Count and ScannedCount."""
    keys: list[tuple[str, str]] = []
    count = scanned = 0
    start: dict[str, Any] | None = None
    while True:
        page = ddb.query(
            TableName=table, Limit=7, **kwargs, **({"ExclusiveStartKey": start} if start else {})
        )
        keys += [(item["pk"]["S"], item["sk"]["S"]) for item in page["Items"]]
        count += page["Count"]
        scanned += page["ScannedCount"]
        start = page.get("LastEvaluatedKey")
        if not start:
            return keys, count, scanned


def test_queries_answer_what_the_table_holds_after_puts_updates_deletes_and_transactions(
    cloud: LocalCloud,
) -> None:
    assert cloud.settings is not None and cloud.settings.endpoint_url is not None
    ddb = client("dynamodb", cloud.settings.endpoint_url)
    table = f"stand-in-queries-{fresh_id('T').lower()}"
    ddb.create_table(
        TableName=table,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[
            {"AttributeName": name, "AttributeType": "S"} for name in ("pk", "sk", "g", "gs")
        ],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "by-g",
                "KeySchema": [
                    {"AttributeName": "g", "KeyType": "HASH"},
                    {"AttributeName": "gs", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
    )
    rng = random.Random(14)
    # The truth, kept by the test: (pk, sk) -> its index key (g, gs), or None when not in the index
    held: dict[tuple[str, str], tuple[str, str] | None] = {}

    def check() -> None:
        for pk in sorted({pk for pk, _ in held} | {"p-none"}):
            expected = sorted(key for key in held if key[0] == pk)
            keys, count, scanned = _query_all(
                ddb, table, KeyConditionExpression="pk = :p", ExpressionAttributeValues={":p": {"S": pk}}
            )
            assert keys == expected and count == scanned == len(expected)
        for g in [f"g{i}" for i in range(6)] + ["g-none"]:
            expected = [
                key
                for key, _ in sorted(
                    ((k, v) for k, v in held.items() if v and v[0] == g), key=lambda kv: (kv[1][1], kv[0])
                )
            ]
            keys, count, scanned = _query_all(
                ddb,
                table,
                IndexName="by-g",
                KeyConditionExpression="g = :g",
                ExpressionAttributeValues={":g": {"S": g}},
            )
            assert sorted(keys) == sorted(expected) and count == scanned == len(expected), g
            # (and in index order: by the index's range key)
            assert [held[key][1] for key in keys] == sorted(held[key][1] for key in keys)  # type: ignore[index]

    # Given 120 items in 12 partitions, 100 of them in the index under 6 keys
    for i in range(120):
        key = (f"p{i % 12}", f"s{i:03d}")
        item = {"pk": {"S": key[0]}, "sk": {"S": key[1]}}
        if i % 6:
            index_key = (f"g{rng.randrange(6)}", f"r{rng.randrange(1000):03d}-{i:03d}")
            item |= {"g": {"S": index_key[0]}, "gs": {"S": index_key[1]}}
            held[key] = index_key
        else:
            held[key] = None
        ddb.put_item(TableName=table, Item=item)
    check()
    # When items move between index keys (UpdateItem changes them in place), leave the index
    for key in rng.sample(sorted(held), 30):
        index_key = (f"g{rng.randrange(6)}", f"r{rng.randrange(1000):03d}-u")
        ddb.update_item(
            TableName=table,
            Key={"pk": {"S": key[0]}, "sk": {"S": key[1]}},
            UpdateExpression="SET g = :g, gs = :gs",
            ExpressionAttributeValues={":g": {"S": index_key[0]}, ":gs": {"S": index_key[1]}},
        )
        held[key] = index_key
    for key in rng.sample(sorted(k for k, v in held.items() if v), 10):
        ddb.update_item(
            TableName=table, Key={"pk": {"S": key[0]}, "sk": {"S": key[1]}}, UpdateExpression="REMOVE g"
        )
        held[key] = None
    check()
    # And some are deleted, overwritten, and written by a transaction and by a batch
    for key in rng.sample(sorted(held), 15):
        ddb.delete_item(TableName=table, Key={"pk": {"S": key[0]}, "sk": {"S": key[1]}})
        del held[key]
    overwritten = rng.choice(sorted(held))
    ddb.put_item(
        TableName=table,
        Item={
            "pk": {"S": overwritten[0]},
            "sk": {"S": overwritten[1]},
            "g": {"S": "g5"},
            "gs": {"S": "a-first"},
        },
    )
    held[overwritten] = ("g5", "a-first")
    moved = rng.choice(sorted(k for k in held if k != overwritten))
    ddb.transact_write_items(
        TransactItems=[
            {
                "Put": {
                    "TableName": table,
                    "Item": {"pk": {"S": "p-new"}, "sk": {"S": "s1"}, "g": {"S": "g0"}, "gs": {"S": "t"}},
                }
            },
            {
                "Update": {
                    "TableName": table,
                    "Key": {"pk": {"S": moved[0]}, "sk": {"S": moved[1]}},
                    "UpdateExpression": "SET g = :g, gs = :gs",
                    "ExpressionAttributeValues": {":g": {"S": "g1"}, ":gs": {"S": "t"}},
                }
            },
        ]
    )
    held[("p-new", "s1")], held[moved] = ("g0", "t"), ("g1", "t")
    ddb.batch_write_item(
        RequestItems={
            table: [
                {
                    "PutRequest": {
                        "Item": {
                            "pk": {"S": "p-batch"},
                            "sk": {"S": f"s{i}"},
                            "g": {"S": "g2"},
                            "gs": {"S": f"b{i}"},
                        }
                    }
                }
                for i in range(5)
            ]
        }
    )
    held |= {("p-batch", f"s{i}"): ("g2", f"b{i}") for i in range(5)}
    # Then every query by partition and by index key answers exactly what the table holds
    check()
    ddb.delete_table(TableName=table)
