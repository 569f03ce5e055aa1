"""Every audit message the archive builds validates against the DICOM audit message schema."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from archive.audit import messages as audit
from archive.audit.syslog import FrameReader, frame, syslog_message
from lxml import etree

from tests.support.audit import assert_valid, schema

SOURCE = audit.AuditSource("ARCHIVE", "1.2.246.10.1")
MOD = audit.ActiveParticipant("CT1", True, audit.SOURCE_ROLE, "10.0.0.5")
ARCHIVE = audit.ActiveParticipant("ARCHIVE", False, audit.DESTINATION_ROLE)
PATIENT = "020516C903K^^^1.2.246.21"
VECTORS = Path(__file__).resolve().parents[3] / "shared" / "testdata" / "xds"
STUDY = audit.study(
    "1.2.3.4", {"1.2.840.10008.5.1.4.1.1.2": 3}, instances={"1.2.840.10008.5.1.4.1.1.2": ["1.2.3.4.1"]}
)

MESSAGES = {
    "stored": audit.instances_transferred(
        source=SOURCE,
        action=audit.Action.CREATE,
        outcome=audit.Outcome.SUCCESS,
        sender=MOD,
        receiver=ARCHIVE,
        patient_key=PATIENT,
        studies=[STUDY],
    ),
    "moved": audit.instances_transferred(
        source=SOURCE,
        action=audit.Action.READ,
        outcome=audit.Outcome.MINOR_FAILURE,
        sender=ARCHIVE,
        receiver=audit.ActiveParticipant("DEST", False, audit.DESTINATION_ROLE),
        requestor=MOD,
        patient_key=PATIENT,
        studies=[STUDY],
        outcome_description="1 of 3 failed",
    ),
    "query": audit.query(
        source=SOURCE,
        outcome=audit.Outcome.SUCCESS,
        requestor=MOD,
        responder=ARCHIVE,
        sop_class_uid="1.2.840.10008.5.1.4.1.2.2.1",
        query_bytes=b"\x08\x00\x52\x00",
        transfer_syntax="1.2.840.10008.1.2",
        patient_keys=[PATIENT],
    ),
    "patient record": audit.patient_record(
        source=SOURCE,
        action=audit.Action.UPDATE,
        outcome=audit.Outcome.SUCCESS,
        sender=audit.ActiveParticipant("PAS|XYZ", True, audit.SOURCE_ROLE),
        archive=ARCHIVE,
        patient_keys=[PATIENT, "T1^^^1.2.246.10.1.22.2026"],
        message_control_id="MSG1",
    ),
    "rejection": audit.instances_accessed(
        source=SOURCE,
        action=audit.Action.DELETE,
        outcome=audit.Outcome.SUCCESS,
        user=MOD,
        patient_key=PATIENT,
        studies=[STUDY],
        outcome_description="113001 Rejected for Quality Reasons",
    ),
    "security alert": audit.security_alert(
        source=SOURCE,
        reporter=ARCHIVE,
        peer=audit.ActiveParticipant("10.0.0.6", True, None, "10.0.0.6"),
        subject="tls://10.0.0.6:2762",
        description="certificate has expired",
    ),
    "login refused": audit.user_authentication(
        source=SOURCE,
        outcome=audit.Outcome.MINOR_FAILURE,
        user=MOD,
        node_=ARCHIVE,
        description="other organisation",
    ),
    "xds retrieve": audit.disclosure(
        source=SOURCE,
        event_id=audit.EXPORT,
        event_type=audit.RAD_69,
        outcome=audit.Outcome.SUCCESS,
        sender=ARCHIVE,
        recipient=audit.ActiveParticipant("https://consumer.example", True, audit.DESTINATION_ROLE),
        person=audit.ActiveParticipant("Dr. Who", True),
        patient_key=PATIENT,
        objects=[audit.study("1.2.3.4", lifecycle="11")],
        purposes_of_use=(audit.Code("TREATMENT", "urn:oasis:names:tc:xspa:1.0", "Treatment"),),
    ),
}


@pytest.mark.parametrize("name", MESSAGES)
def test_each_message_validates_against_the_dicom_audit_schema(name: str) -> None:
    assert_valid(audit.encode(MESSAGES[name]))


def test_the_stored_message_says_what_was_stored_by_whom() -> None:
    document = assert_valid(audit.encode(MESSAGES["stored"]))

    event = document.find("EventIdentification")
    assert (event.get("EventActionCode"), event.find("EventID").get("csd-code")) == ("C", "110104")
    assert event.get("EventDateTime").endswith("Z")
    patient = document.findall("ParticipantObjectIdentification")[-1]
    assert patient.get("ParticipantObjectID") == "020516C903K^^^&1.2.246.21&ISO"
    assert patient.get("ParticipantObjectTypeCodeRole") == "1"
    assert document.find(".//SOPClass").get("NumberOfInstances") == "3"


def test_the_schema_is_not_lenient() -> None:
    # Given a valid message without the mandatory UserIsRequestor of one participant
    document = etree.fromstring(audit.encode(MESSAGES["stored"]))
    del document.find("ActiveParticipant").attrib["UserIsRequestor"]

    # Then the schema refuses it, as it refuses the public ATNA vectors that omit it ...
    assert not schema().validate(document)
    vector = etree.parse(str(VECTORS / "iti-43-log.xml"))
    assert not schema().validate(vector)
    # ... and accepts those vectors once it is there (purpose of use included)
    for participant in vector.iter("ActiveParticipant"):
        if "UserIsRequestor" not in participant.attrib:
            participant.set("UserIsRequestor", "false")
    assert schema().validate(vector), schema().error_log.last_error


def test_syslog_messages_are_rfc5424_and_octet_counted() -> None:
    xml = audit.encode(MESSAGES["login refused"])
    message = syslog_message(
        xml, hostname="archive-1", app_name="ARCHIVE", failure=True, at=datetime(2026, 1, 2, tzinfo=UTC)
    )

    assert message.startswith(
        b"<84>1 2026-01-02T00:00:00.000Z archive-1 ARCHIVE - IHE+RFC-3881 - \xef\xbb\xbf<AuditMessage"
    )
    reader = FrameReader()
    stream = frame(message) + frame(b"second")
    assert reader.feed(stream[:10]) == []
    assert reader.feed(stream[10:]) == [message, b"second"]
