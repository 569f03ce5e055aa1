"""Given a queued patient change, when the patient_update Lambda gets it more than once (SQS
delivers at least once), then the change and its history are there exactly once."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from archive.data.models import Patient
from archive.data.patients import PatientRepository
from archive.model.identity import PatientIdentity
from archive.model.patients import NewDemographics, PatientChangeRequest, PatientEvent

from local.cloud import DEMO_ORG, LocalCloud
from local.runner import FUNCTIONS, LambdaContext, load_handler, sqs_event
from tests.support.hl7 import TEMP_ISSUER, fresh_id


def record(request: PatientChangeRequest, message_id: str) -> dict[str, str]:
    body = json.dumps(request.to_json())
    return {"MessageId": message_id, "ReceiptHandle": message_id, "Body": body}


def test_a_redelivered_merge_is_applied_once(cloud: LocalCloud) -> None:
    assert cloud.settings is not None
    function = next(f for f in FUNCTIONS if f.name == "patient_update")
    handler = load_handler(function)
    prior, survivor = PatientIdentity(fresh_id(), TEMP_ISSUER), PatientIdentity(fresh_id(), TEMP_ISSUER)
    request = PatientChangeRequest(
        event=PatientEvent.MERGE,
        patient=survivor,
        prior=prior,
        demographics=NewDemographics(patient_name="Mäkinen^Aino", name_charset="ISO_IR 192"),
        org_oid=DEMO_ORG.oid,
        sender="TEST_PAS|XYZ_RADIOLOGY",
        message_control_id=f"D{prior.patient_id}",
        received_at=datetime.now(UTC),
        message="MSH|^~\\&|TEST_PAS|XYZ_RADIOLOGY|...",
    )
    arn = cloud.queues["patient-updates"].arn
    # When the Lambda is invoked with the same message three times (two in one batch, once more later)
    first = handler.handler(
        sqs_event([record(request, "m1"), record(request, "m2")], arn), LambdaContext("t")
    )
    second = handler.handler(sqs_event([record(request, "m3")], arn), LambdaContext("t"))
    # Then no invocation reported a failure
    assert first["batchItemFailures"] == [] and second["batchItemFailures"] == []
    # And the merge is there, with the name, and recorded once under each identity
    assert Patient.get(prior.key).merged_into == survivor.key
    assert (Patient.get(survivor.key).patient_name, Patient.get(survivor.key).name_charset) == (
        "Mäkinen^Aino",
        "ISO_IR 192",
    )
    history = PatientRepository(cloud.settings)
    for identity in (prior, survivor):
        assert [(h["event"], h["outcome"]) for h in history.history(identity.key)] == [("A40", "APPLIED")]
