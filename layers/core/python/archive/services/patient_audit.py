"""110110 Patient Record audit messages for HL7 patient changes (merge, identifier change, update)."""

from __future__ import annotations

from archive.audit import messages as audit
from archive.model.patients import ChangeResult, Outcome, PatientChangeRequest
from archive.services.audit import AuditTrail


def audit_patient_change(trail: AuditTrail, request: PatientChangeRequest, result: ChangeResult) -> None:
    """One message per applied, unchanged or refused change; a redelivered message (DUPLICATE) was
    audited the first time."""
    if result.outcome is Outcome.DUPLICATE:
        return
    refused = result.outcome is Outcome.REFUSED
    keys = [request.patient.key] + ([request.prior.key] if request.prior else [])
    trail.record(
        audit.patient_record(
            source=trail.source,
            action=audit.Action.UPDATE,
            outcome=audit.Outcome.MINOR_FAILURE if refused else audit.Outcome.SUCCESS,
            sender=audit.ActiveParticipant(
                request.sender, True, audit.SOURCE_ROLE, alternative_user_id=request.org_oid
            ),
            archive=audit.ActiveParticipant(trail.source.source_id, False, audit.DESTINATION_ROLE),
            patient_keys=keys,
            message_control_id=request.message_control_id,
            outcome_description=(
                f"ADT^{request.event.value} {result.outcome.value}"
                + (f": {result.reason}" if result.reason else "")
            ),
        )
    )
