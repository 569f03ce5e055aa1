"""The local AWS stand-ins under the archive's request mix: ``python -m bench.stand_ins``.

Starts each candidate server on loopback, sends the requests the archive makes (S3 PUT/GET of
512 KB objects with Object Lock headers, DynamoDB PutItem/GetItem/Query on a GSI/
TransactWriteItems, SQS send/receive+delete) one at a time from one boto3 client, and reports
operations per second and the server's CPU milliseconds per operation (from /proc). A candidate
that refuses an operation is reported as such. Written to bench/results/stand_ins.json; the
figures and the choice are in docs/local-cloud.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "stand_ins.json"
BODY = os.urandom(512 * 1024)
TABLE = "bench-items"


@dataclass(frozen=True)
class Candidate:
    name: str
    argv: Callable[[int, Path], list[str]]
    services: frozenset[str]


def _moto(*extra: str) -> Callable[[int, Path], list[str]]:
    return lambda port, _data: [sys.executable, "-m", "local.moto_server", "-p", str(port), *extra]


CANDIDATES = (
    Candidate(
        "moto (python -m moto.server, as installed)",
        lambda port, _data: [sys.executable, "-m", "moto.server", "-p", str(port)],
        frozenset({"s3", "dynamodb", "sqs"}),
    ),
    Candidate(
        "moto (local.moto_server, werkzeug, in memory)",
        _moto("--http-server", "werkzeug"),
        frozenset({"s3", "dynamodb", "sqs"}),
    ),
    Candidate("moto (local.moto_server, cheroot, in memory)", _moto(), frozenset({"s3", "dynamodb", "sqs"})),
    Candidate(
        "moto (local.moto_server, cheroot, --data-dir, persistent)",
        lambda port, data: [*_moto()(port, data), "--data-dir", str(data)],
        frozenset({"s3", "dynamodb", "sqs"}),
    ),
    Candidate(
        "dynalite 4.0.0 (npm, LevelDB on disk)",
        # Not a project dependency (it lacks transactions, docs/local-cloud.md): measured from
        # wherever DYNALITE points (an `npm install dynalite@4.0.0` elsewhere).
        lambda port, data: [os.environ.get("DYNALITE", "dynalite"), "--port", str(port), "--path", str(data)],
        frozenset({"dynamodb"}),
    ),
)


def _client(service: str, endpoint: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="eu-north-1",
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
    )


def _cpu_seconds(pid: int) -> float:
    """utime + stime of the process and its waited-for children, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def _wait(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1)
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing on {port}")


def _operations(
    endpoint: str, services: frozenset[str], n: int
) -> list[tuple[str, int, Callable[[int], Any]]]:
    """(name, count, op(i)) in order; set-up done here."""
    ops: list[tuple[str, int, Callable[[int], Any]]] = []
    if "s3" in services:
        s3 = _client("s3", endpoint)
        s3.create_bucket(
            Bucket="bench-images",
            ObjectLockEnabledForBucket=True,
            CreateBucketConfiguration={"LocationConstraint": "eu-north-1"},
        )
        until = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)

        def put(i: int) -> Any:
            return s3.put_object(
                Bucket="bench-images",
                Key=f"k/{i}",
                Body=BODY,
                ObjectLockMode="GOVERNANCE",
                ObjectLockRetainUntilDate=until,
                IfNoneMatch="*",
            )

        def get(i: int) -> Any:
            return s3.get_object(Bucket="bench-images", Key=f"k/{i}")["Body"].read()

        ops += [("S3 PutObject 512 KB + lock", n, put), ("S3 GetObject 512 KB", n, get)]
    if "dynamodb" in services:
        ddb = _client("dynamodb", endpoint)
        ddb.create_table(
            TableName=TABLE,
            KeySchema=[
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
                {"AttributeName": "study", "AttributeType": "S"},
            ],
            BillingMode="PAY_PER_REQUEST",
            GlobalSecondaryIndexes=[
                {
                    "IndexName": "by-study",
                    "KeySchema": [{"AttributeName": "study", "KeyType": "HASH"}],
                    "Projection": {"ProjectionType": "ALL"},
                }
            ],
        )

        # dynalite creates tables asynchronously (CREATING, then ACTIVE), as DynamoDB does.
        ddb.get_waiter("table_exists").wait(TableName=TABLE, WaiterConfig={"Delay": 1, "MaxAttempts": 60})

        def item(i: int) -> dict[str, Any]:
            return {
                "pk": {"S": f"p{i}"},
                "sk": {"S": "i"},
                "study": {"S": f"s{i // 10}"},
                "attrs": {"S": "x" * 400},
            }

        ops += [
            ("DynamoDB PutItem", 3 * n, lambda i: ddb.put_item(TableName=TABLE, Item=item(i))),
            (
                "DynamoDB GetItem",
                3 * n,
                lambda i: ddb.get_item(TableName=TABLE, Key={"pk": {"S": f"p{i}"}, "sk": {"S": "i"}}),
            ),
            (
                "DynamoDB Query (GSI, 10 items)",
                n,
                lambda i: ddb.query(
                    TableName=TABLE,
                    IndexName="by-study",
                    KeyConditionExpression="study = :s",
                    ExpressionAttributeValues={":s": {"S": f"s{i % (3 * n // 10)}"}},
                ),
            ),
            (
                "DynamoDB TransactWriteItems (3 puts)",
                n,
                lambda i: ddb.transact_write_items(
                    TransactItems=[
                        {"Put": {"TableName": TABLE, "Item": item(10_000 + 3 * i + j)}} for j in range(3)
                    ]
                ),
            ),
        ]
    if "sqs" in services:
        sqs = _client("sqs", endpoint)
        url = sqs.create_queue(QueueName="bench-queue")["QueueUrl"]

        def receive(_i: int) -> Any:
            messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1).get("Messages", [])
            for m in messages:
                sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])

        ops += [
            ("SQS SendMessage", 3 * n, lambda i: sqs.send_message(QueueUrl=url, MessageBody=f'{{"i": {i}}}')),
            ("SQS ReceiveMessage + DeleteMessage", 3 * n, receive),
        ]
    return ops


def measure(candidate: Candidate, port: int, n: int) -> dict[str, Any]:
    data = Path(tempfile.mkdtemp(prefix="stand-in-"))
    process = subprocess.Popen(
        candidate.argv(port, data), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    figures: dict[str, Any] = {}
    try:
        _wait(port)
        endpoint = f"http://127.0.0.1:{port}"
        for name, count, op in _operations(endpoint, candidate.services, n):
            cpu, started, ours = _cpu_seconds(process.pid), time.perf_counter(), time.process_time()
            try:
                for i in range(count):
                    op(i)
            except Exception as error:  # a candidate that lacks the operation
                figures[name] = {"refused": f"{type(error).__name__}: {error}"[:200]}
                continue
            wall, cpu = time.perf_counter() - started, _cpu_seconds(process.pid) - cpu
            figures[name] = {
                "ops_per_s": round(count / wall, 1),
                "server_cpu_ms_per_op": round(1000 * cpu / count, 2),
                # boto3's side of the same calls (signing, HTTP, parsing), in this process
                "client_cpu_ms_per_op": round(1000 * (time.process_time() - ours) / count, 2),
            }
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(data, ignore_errors=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=100, help="S3 objects; 3n items and messages")
    parser.add_argument("--port", type=int, default=4590)
    parser.add_argument("--only", help="measure the candidates whose name contains this")
    args = parser.parse_args()
    results = {
        "n": args.n,
        "load_average": os.getloadavg(),
        "cpus": os.cpu_count(),
        "candidates": {},
    }
    for candidate in CANDIDATES:
        if args.only and args.only not in candidate.name:
            continue
        if shutil.which(candidate.argv(0, ROOT)[0]) is None:
            print(f"skipping {candidate.name}: not installed", flush=True)
            continue
        print(f"measuring {candidate.name} ...", flush=True)
        results["candidates"][candidate.name] = figures = measure(candidate, args.port, args.n)
        for op, value in figures.items():
            print(f"  {op:<40} {value}", flush=True)
    results["load_average_after"] = os.getloadavg()
    if args.only and RESULTS.exists():  # add to the earlier run's figures
        earlier = json.loads(RESULTS.read_text())
        earlier["candidates"].update(results["candidates"])
        earlier.setdefault("later_runs", []).append({k: v for k, v in results.items() if k != "candidates"})
        results = earlier
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
