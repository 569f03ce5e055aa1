"""Plays Lambda's SQS event source mapping locally: polls a queue, calls the handler with a batch.

The handler module is the one deployed to Lambda, loaded from its file with the same environment
variables CDK sets. Messages the handler reports as failed (batchItemFailures) are left on the
queue, so they come back after the visibility timeout and reach the DLQ after maxReceiveCount,
exactly as with the real event source mapping.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from archive.topology import (
    CONSUMERS,
    DISCLOSURE_ANCHOR,
    LOCK_INSTANCE,
    PATIENT_UPDATE,
    REGISTER_STUDY,
    SEND_IAN,
    ConsumerSpec,
    FunctionSpec,
)

LOG = logging.getLogger("archive.local.runner")
_RECEIVE_LOCKS: dict[str, threading.Lock] = {}
ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class LocalFunction:
    """A Lambda function as the local cloud runs it: handler file and the queue that feeds it."""

    name: str
    handler_file: str  # relative to the repository root
    queue: str  # logical queue name (archive.topology.QUEUES)
    batch_size: int = 10
    # Concurrent "containers" polling the queue, as Lambda scales an SQS event source out. Each
    # loads its own copy of the handler module, as separate execution environments would. On a FIFO
    # queue this keeps the order per message group: SQS (and moto) hold back a group's messages
    # while one of them is in flight, which is how Lambda scales a FIFO source too.
    concurrency: int = 1
    # Run in a process of its own (``python -m local.lambda_process``), so a test can SIGKILL it
    # mid-invocation as a Lambda execution environment can die.
    own_process: bool = False
    # ``LocalCloud.drain`` waits for this queue: work that other steps depend on (indexing, patient
    # updates). Registration and IAN queues hold delayed and backed-off messages by design.
    drained: bool = True


# The IAN sender runs apart so that tests can kill it in the middle of a delivery; the copier into
# the locked bucket so that a test can restart it with the locked bucket out of its reach.
OWN_PROCESS = frozenset({SEND_IAN.function, LOCK_INSTANCE.function})
NOT_DRAINED = frozenset({REGISTER_STUDY.function, SEND_IAN.function})


# Pollers per function. The index stays at one: moto applies concurrent transactions on the same
# item without isolation (counter updates get lost; seen here with 4 pollers), which real DynamoDB
# does not. Patient changes get four: a backlog of HL7 changes (after a burst) drains several
# patients at a time, as Lambda would with one concurrent batch per message group (measured in
# docs/conformance-hl7.md); a patient's own changes still come one at a time, in order.
CONCURRENCY = {PATIENT_UPDATE.function: 4}


def local_function(consumer: ConsumerSpec) -> LocalFunction:
    return LocalFunction(
        consumer.function,
        consumer.handler_file,
        consumer.queue,
        consumer.batch_size,
        concurrency=CONCURRENCY.get(consumer.function, 1),
        own_process=consumer.function in OWN_PROCESS,
        drained=consumer.function not in NOT_DRAINED,
    )


FUNCTIONS = tuple(local_function(consumer) for consumer in CONSUMERS)


class LambdaContext:
    """The attributes of the Lambda context object that powertools and handlers use."""

    def __init__(self, name: str, timeout_s: float = 60.0) -> None:
        self.function_name = name
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = 512
        self.invoked_function_arn = f"arn:aws:lambda:eu-north-1:000000000000:function:{name}"
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{name}"
        self.log_stream_name = "local"
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def load_handler(function: LocalFunction) -> ModuleType:
    path = ROOT / function.handler_file
    spec = importlib.util.spec_from_file_location(f"lambda_{function.name}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sqs_event(messages: list[dict[str, Any]], queue_arn: str) -> dict[str, Any]:
    """The event Lambda builds from an SQS batch."""
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m.get("Attributes", {}),
                "messageAttributes": m.get("MessageAttributes", {}),
                "md5OfBody": m.get("MD5OfBody", ""),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": "eu-north-1",
            }
            for m in messages
        ]
    }


class QueuePoller:
    def __init__(self, function: LocalFunction, sqs: Any, queue_url: str, queue_arn: str) -> None:
        self.function = function
        self.sqs = sqs
        self.queue_url = queue_url
        self.queue_arn = queue_arn
        self.module = load_handler(function)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lambda-{function.name}", daemon=True)
        # A poller is one execution environment: its module (and the handler's state) is its own.
        self.invocations = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self.request_stop()
        self.join(timeout)

    def request_stop(self) -> None:
        """No new batch after the one in hand."""
        self._stop.set()

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for the batch in hand; True if the poller has stopped.

        A poller still busy after that is abandoned (its thread is a daemon): its messages were
        not deleted, so they stay queued and come back after the visibility timeout, to handlers
        that are idempotent.
        """
        self._thread.join(timeout=max(0.0, timeout))
        return not self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once(wait_seconds=1)
            except Exception:
                LOG.exception("poll of %s failed", self.function.name)
                self._stop.wait(1)

    def poll_once(self, wait_seconds: int = 0) -> int:
        # moto decides which FIFO message groups are in flight at the start of a receive, without a
        # lock: two receives at once can take two messages of one group, and apply them out of
        # order. The pollers of a queue therefore receive one at a time (and handle concurrently).
        with _RECEIVE_LOCKS.setdefault(self.queue_url, threading.Lock()):
            response = self.sqs.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=self.function.batch_size,
                WaitTimeSeconds=wait_seconds,
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            )
        messages = response.get("Messages", [])
        if not messages:
            return 0
        event = sqs_event(messages, self.queue_arn)
        self.invocations += 1
        try:
            result = self.module.handler(event, LambdaContext(self.function.name)) or {}
            failed = {f["itemIdentifier"] for f in result.get("batchItemFailures", [])}
        except Exception:
            LOG.exception("%s raised; the whole batch will be retried", self.function.name)
            failed = {m["MessageId"] for m in messages}
        done = [m for m in messages if m["MessageId"] not in failed]
        if done:
            self.sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)],
            )
        return len(messages)


def unqueued_function(spec: FunctionSpec) -> LocalFunction:
    """A function API Gateway or a schedule invokes (no queue)."""
    return LocalFunction(spec.function, spec.handler_file, "")


# Functions an EventBridge schedule invokes on AWS (infrastructure/stack.py).
SCHEDULED = (unqueued_function(DISCLOSURE_ANCHOR),)


def scheduled_event(name: str) -> dict[str, Any]:
    """The event an EventBridge scheduled rule sends."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "000000000000",
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "region": "eu-north-1",
        "resources": [f"arn:aws:events:eu-north-1:000000000000:rule/{name}"],
        "detail": {},
    }


class Scheduler:
    """Plays an EventBridge schedule: calls the handler every ``every_seconds``."""

    def __init__(self, function: LocalFunction, every_seconds: float) -> None:
        self.function = function
        self.every_seconds = every_seconds
        self.module = load_handler(function)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"schedule-{function.name}", daemon=True)
        self.invocations = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.request_stop()
        self.join(30)

    def request_stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for a run in hand; True if the schedule has stopped."""
        self._thread.join(timeout=max(0.0, timeout))
        return not self._thread.is_alive()

    def invoke(self) -> Any:
        self.invocations += 1
        return self.module.handler(scheduled_event(self.function.name), LambdaContext(self.function.name))

    def _run(self) -> None:
        while not self._stop.wait(self.every_seconds):
            try:
                self.invoke()
            except Exception:
                LOG.exception("scheduled %s failed", self.function.name)
