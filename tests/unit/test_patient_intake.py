"""From an HL7 identifier to the archive's patient identity, and the queued request's identity."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from archive.errors import RequiredFieldMissing, UnknownAssigningAuthority, UntrustedAssigningAuthority
from archive.hl7.message import HierarchicDesignator, PatientIdentifier
from archive.model.identity import PatientIdentity
from archive.model.organisations import OrganisationInfo, SendingFacility
from archive.model.patients import NewDemographics, PatientChangeRequest, PatientEvent, PatientState
from archive.services.patient_intake import patient_identity

ORG = OrganisationInfo(
    "1.2.246.10.1", "Hospital", ("1.2.246.21", "1.2.246.10.1.22.2026"), "1.2.246.10.1.22.2026"
)
SENDER = SendingFacility(ORG, {"ADT1": "1.2.246.10.1.22.2026", "OTHER": "9.9.9"})


def cx(pid: str, namespace: str = "", oid: str = "", kind: str = "") -> PatientIdentifier:
    return PatientIdentifier(pid, HierarchicDesignator(namespace, oid, kind), "PID^1^3^1")


@pytest.mark.parametrize(
    ("identifier", "issuer"),
    [
        (cx("020516C903K", oid="1.2.246.21", kind="ISO"), "1.2.246.21"),
        (cx("T1", namespace="ADT1"), "1.2.246.10.1.22.2026"),
        (cx("T1"), "1.2.246.10.1.22.2026"),  # no authority: the organisation's default issuer
    ],
)
def test_identifiers_map_to_trusted_issuers(identifier: PatientIdentifier, issuer: str) -> None:
    assert patient_identity((identifier,), SENDER, "PID-3", "PID^1^3") == PatientIdentity(
        identifier.id, issuer
    )


def test_the_first_trusted_repetition_wins() -> None:
    ids = (cx("X", namespace="zxcv"), cx("T9", namespace="ADT1"))
    assert patient_identity(ids, SENDER, "PID-3", "PID^1^3") == PatientIdentity("T9", "1.2.246.10.1.22.2026")


@pytest.mark.parametrize(
    ("identifier", "error"),
    [
        (cx("X", namespace="zxcv"), UnknownAssigningAuthority),
        (cx("X", namespace="OTHER"), UntrustedAssigningAuthority),
        (cx("X", oid="1.2.3", kind="ISO"), UntrustedAssigningAuthority),
    ],
    ids=["unmapped namespace", "mapped to an untrusted issuer", "untrusted OID"],
)
def test_unknown_or_untrusted_authorities_are_refused_at_pid_3_4(
    identifier: PatientIdentifier, error: type
) -> None:
    with pytest.raises(error) as caught:
        patient_identity((identifier,), SENDER, "PID-3", "PID^1^3")
    assert caught.value.location == "PID^1^3^1^4"


@pytest.mark.parametrize(
    "identifier",
    [
        cx("020516C903K", oid="1.2.246.21", kind="L"),
        cx("020516C903K", oid="1.2.246.21"),
        cx("020516C903K", kind="ISO"),
        cx("020516C903K", oid="1.2.246.021", kind="ISO"),
        cx("020516C903K", oid="HOSPITAL", kind="ISO"),
        cx("020516C903K", namespace="ADT1", oid="1.2.246.21", kind="ISO"),
    ],
    ids=["type L", "no type", "type without ID", "leading zero", "not an OID", "namespace says otherwise"],
)
def test_a_malformed_authority_is_refused_even_beside_a_trusted_repetition(
    identifier: PatientIdentifier,
) -> None:
    """Issue 15 finding 6: such an identifier used to be moved to the default temporary-ID issuer."""
    with pytest.raises(UnknownAssigningAuthority) as caught:
        patient_identity((identifier, cx("T9", namespace="ADT1")), SENDER, "PID-3", "PID^1^3")
    assert caught.value.location == "PID^1^3^1^4"


def test_only_an_identifier_with_no_authority_at_all_takes_the_default_and_only_where_configured() -> None:
    no_default = SendingFacility(OrganisationInfo("1.2.246.10.2", "Clinic", ("1.2.246.21",), None), {})
    with pytest.raises(UnknownAssigningAuthority):
        patient_identity((cx("T1"),), no_default, "PID-3", "PID^1^3")
    hetu = cx("020516C903K", oid="1.2.246.21", kind="ISO")
    assert patient_identity((hetu,), no_default, "PID-3", "PID^1^3").issuer == "1.2.246.21"


def test_no_identifier_is_a_missing_required_field() -> None:
    with pytest.raises(RequiredFieldMissing) as caught:
        patient_identity((), SENDER, "MRG-1", "MRG^1^1")
    assert caught.value.location == "MRG^1^1"


def request(control_id: str = "M1", received: datetime | None = None) -> PatientChangeRequest:
    return PatientChangeRequest(
        event=PatientEvent.MERGE,
        patient=PatientIdentity("020516C903K", "1.2.246.21"),
        prior=PatientIdentity("T1", "1.2.246.10.1.22.2026"),
        demographics=NewDemographics("Äärelä^Åsa", "ISO_IR 100", "19160502", ""),
        org_oid=ORG.oid,
        sender="PAS|HOSP",
        message_control_id=control_id,
        received_at=received or datetime(2026, 1, 1, tzinfo=UTC),
        message="MSH|...",
    )


def test_a_request_survives_the_queue_unchanged() -> None:
    original = request()
    assert PatientChangeRequest.from_json(original.to_json()) == original


def test_the_same_message_has_the_same_deduplication_id_and_another_one_not() -> None:
    later = request(received=datetime(2026, 1, 2, tzinfo=UTC))
    assert request().message_id == later.message_id
    assert request().message_id != request("M2").message_id
    assert len(request().message_id) <= 128 and len(request().group_id) <= 128


def test_a_merge_is_ordered_with_the_prior_identity() -> None:
    merge = request()
    update = PatientChangeRequest(
        **{**merge.__dict__, "event": PatientEvent.UPDATE, "patient": merge.prior, "prior": None}
    )
    assert merge.group_id == update.group_id


def test_hl7_null_clears_and_absent_keeps() -> None:
    state = PatientState(
        "k", "T1", "i", patient_name="Old", name_charset="ISO_IR 100", birth_date="1916", sex="M"
    )
    after = NewDemographics(patient_name="New^Name", sex="").applied_to(state)
    assert (after.patient_name, after.name_charset, after.birth_date, after.sex) == (
        "New^Name",
        None,
        "1916",
        None,
    )


def test_a_listener_refusal_survives_the_queue_and_keeps_a_bounded_message() -> None:
    from archive.model.patients import ListenerRefusal

    refusal = ListenerRefusal(
        event="A31",
        org_oid="1.2.246.10.1",
        sender="PAS|XYZ",
        message_control_id="42",
        received_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        reason="refused by the listener: InvalidFieldValue: too long",
        message="MSH|" + "x" * 100_000,
        patient_keys=("T1^^^1.2.3",),
    )
    body = refusal.to_json()
    assert body["kind"] == ListenerRefusal.KIND and len(body["message"]) == ListenerRefusal.MESSAGE_KEPT
    back = ListenerRefusal.from_json(body)
    assert back.patient_keys == refusal.patient_keys and back.reason == refusal.reason
    assert back.change_id != ListenerRefusal.from_json({**body, "message": "other"}).change_id


def test_the_fields_a_message_sends_are_the_ones_applied_to_another_organisations_studies() -> None:
    assert NewDemographics(patient_name="A^B", sex="").sent == {"patient_name", "sex"}
    assert NewDemographics().sent == frozenset()
