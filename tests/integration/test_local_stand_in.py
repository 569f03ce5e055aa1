"""The local stand-in's DynamoDB transactions (``local/moto_server.py``) roll back exactly as
DynamoDB's do: when one condition fails, none of the transaction's writes is there afterwards."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from archive.data.models import Patient, PatientChange
from pynamodb.connection import Connection
from pynamodb.exceptions import DoesNotExist, TransactWriteError
from pynamodb.transactions import TransactWrite

from local.cloud import LocalCloud
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
