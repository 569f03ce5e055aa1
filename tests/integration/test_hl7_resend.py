"""Given an HL7 message that was applied, when the same message (sender + MSH-10) comes again after
any delay, then it is recognised and not applied a second time.

SQS FIFO deduplication only covers five minutes, and a test cannot wait that long. The test takes
both paths a late re-send can take instead, honestly:
1. through the listener, which finds the message's once-only marker and answers AA without queueing;
2. straight onto the queue with a new deduplication ID, which is what SQS does with a re-send once
   its window has passed (the queued body is byte for byte the one the listener queued the first
   time); the Lambda finds the marker and changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import uuid

from archive.data.models import Patient
from archive.data.patients import PatientRepository
from archive.model.identity import PatientIdentity

from local.cloud import LocalCloud
from local.resources import client
from tests.support.hl7 import TEMP_ISSUER, adt, exchange, frame, fresh_id, wait_for_change


def test_a_message_resent_after_it_was_applied_is_applied_once(cloud: LocalCloud) -> None:
    assert cloud.settings is not None
    pid = fresh_id()
    identity = PatientIdentity(pid, TEMP_ISSUER)
    first = adt("A31", pid, name="First^Name", control_id=f"1{pid}")
    second = adt("A31", pid, name="Second^Name", control_id=f"2{pid}")
    # Given a rename, applied, and a later rename, applied
    [ack] = exchange(cloud.hl7_port, frame(first), expect=1)
    assert ack.code == "AA", ack.text
    wait_for_change(cloud, identity, f"1{pid}")
    [ack] = exchange(cloud.hl7_port, frame(second), expect=1)
    assert ack.code == "AA", ack.text
    wait_for_change(cloud, identity, f"2{pid}")
    # When the first message is sent again through the listener
    [ack] = exchange(cloud.hl7_port, frame(first), expect=1)
    # Then it is acknowledged (it was accepted before) ...
    assert (ack.code, ack.control_id) == ("AA", f"1{pid}"), ack.text
    # When the first message's queued body arrives again past SQS's deduplication window
    history = PatientRepository(cloud.settings).history(identity.key)
    [applied] = [h for h in history if h["message_control_id"] == f"1{pid}"]
    body = json.dumps(
        {
            "event": "A31",
            "patient": {"patient_id": pid, "issuer": TEMP_ISSUER},
            "prior": None,
            "demographics": {"patient_name": "First^Name", "birth_date": "19160502", "sex": "M"},
            "org_oid": applied["org_oid"],
            "sender": applied["sender"],
            "message_control_id": f"1{pid}",
            "received_at": applied["received_at"],
            "message": applied["message"],
        }
    )
    sqs = client("sqs", cloud.endpoint)
    sqs.send_message(
        QueueUrl=cloud.queues["patient-updates"].url,
        MessageBody=body,
        MessageGroupId=hashlib.sha256(identity.key.encode()).hexdigest(),
        MessageDeduplicationId=uuid.uuid4().hex,  # a new window: SQS delivers it
    )
    cloud.drain(timeout=120)
    # Then the name is still the second one, and the first message is in the history once
    assert Patient.get(identity.key, consistent_read=True).patient_name == "Second^Name"
    history = PatientRepository(cloud.settings).history(identity.key)
    assert [(h["message_control_id"], h["outcome"]) for h in history] == [
        (f"1{pid}", "APPLIED"),
        (f"2{pid}", "APPLIED"),
    ]
    # And nothing went to the dead-letter queue
    dlq = sqs.get_queue_attributes(
        QueueUrl=cloud.queues["patient-updates"].dlq_url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    assert dlq["ApproximateNumberOfMessages"] == "0"
