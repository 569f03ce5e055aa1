"""Patient administration: merging identities (A40), changing an identifier (A47) and updating
demographics (A08/A31), as the index sees them.

The MLLP listener calls ``PatientService.check`` before it acknowledges a message, so the sender
learns at once about a merged (204) or duplicate (205) identifier; the patient_update Lambda calls
``PatientService.apply``, which decides again on consistent reads and writes with conditions, so
concurrent or repeated messages cannot corrupt the index: the same message twice is recorded once,
the same merge twice is a no-op, and a reversed merge is refused rather than making a loop.

Stored objects are never touched. A merge points the prior identity at the survivor
(``Patient.merged_into``; the DICOM listener follows it for later images) and re-points the prior
identity's studies at the survivor, so C-FIND by the surviving ID finds them; retrieval coerces the
patient attributes from the current Patient record.
"""

from __future__ import annotations

from dataclasses import replace

from archive.data.patients import PatientRepository
from archive.errors import ChangeConflict, DuplicatePatient, InvalidMerge, PatientMerged, PatientUpdateRefused
from archive.model.identity import PatientIdentity
from archive.model.patients import (
    ChangeEntry,
    ChangeResult,
    Outcome,
    PatientChangeRequest,
    PatientEvent,
    PatientState,
)

MAX_ATTEMPTS = 4


def _blank(identity: PatientIdentity, org_oid: str) -> PatientState:
    return PatientState(identity.key, identity.patient_id, identity.issuer, org_oid=org_oid)


class PatientService:
    def __init__(self, repository: PatientRepository) -> None:
        self._repository = repository

    # --- before acknowledging --------------------------------------------------------------

    def check(self, request: PatientChangeRequest) -> None:
        """Refuse now what ``apply`` would refuse (PatientMerged, DuplicatePatient, InvalidMerge)."""
        patient = self._repository.get(request.patient.key)
        prior = self._repository.get(request.prior.key) if request.prior else None
        self._decide(request, patient, prior)

    def _decide(
        self, request: PatientChangeRequest, patient: PatientState | None, prior: PatientState | None
    ) -> bool:
        """Raise if the request must be refused; True if it changes nothing (done before)."""
        if request.prior is None:
            if patient is not None and patient.merged_into:
                raise PatientMerged(f"patient {patient.patient_key} was merged into {patient.merged_into}")
            return False
        if request.prior.key == request.patient.key:
            raise InvalidMerge(f"cannot merge patient {request.patient.key} with itself")
        if prior is not None and prior.merged_into == request.patient.key:
            return True  # the same merge again (perhaps with another MSH-10): nothing to do
        if prior is not None and prior.merged_into:
            raise PatientMerged(f"prior patient {prior.patient_key} was merged into {prior.merged_into}")
        if patient is not None and patient.merged_into:
            raise PatientMerged(
                f"patient {patient.patient_key} was merged into {patient.merged_into}; "
                "a merge the other way round would make a loop"
            )
        if request.event is PatientEvent.CHANGE_ID and patient is not None:
            raise DuplicatePatient(f"the new identifier {patient.patient_key} is in use already")
        return False

    # --- in the Lambda ---------------------------------------------------------------------

    def apply(self, request: PatientChangeRequest) -> ChangeResult:
        """Apply the request once; idempotent and safe against concurrent requests."""
        main_key = request.patient.key
        if self._repository.change_recorded(main_key, request.change_id):
            return self._finish(request, Outcome.DUPLICATE)
        for _ in range(MAX_ATTEMPTS):
            patient = self._repository.get(main_key)
            prior = self._repository.get(request.prior.key) if request.prior else None
            try:
                unchanged = self._decide(request, patient, prior)
            except PatientUpdateRefused as exc:
                self._repository.record([self._entry(request, main_key, Outcome.REFUSED, reason=str(exc))])
                return ChangeResult(Outcome.REFUSED, str(exc))
            try:
                if unchanged:
                    self._record_unchanged(request, patient, prior)
                    return self._finish(request, Outcome.UNCHANGED)
                if request.prior is not None:
                    self._move(request, patient, prior)
                else:
                    self._update(request, patient)
            except ChangeConflict:
                if self._repository.change_recorded(main_key, request.change_id):
                    return self._finish(request, Outcome.DUPLICATE)
                continue  # someone else changed one of the identities: decide again
            return self._finish(request, Outcome.APPLIED)
        raise ChangeConflict(f"{request.event} {request.message_control_id}: too many concurrent changes")

    def _finish(self, request: PatientChangeRequest, outcome: Outcome) -> ChangeResult:
        """Bring the studies in line with the identity (again, after a crash or redelivery)."""
        patient = self._repository.get(request.patient.key)
        if patient is None or patient.merged_into:
            return ChangeResult(outcome)
        studies = 0
        if request.prior is not None:
            studies += self._repository.update_studies(request.prior.key, patient)
        studies += self._repository.update_studies(patient.patient_key, patient)
        return ChangeResult(outcome, studies_updated=studies)

    def _move(
        self, request: PatientChangeRequest, patient: PatientState | None, prior: PatientState | None
    ) -> None:
        assert request.prior is not None
        prior_before = prior or _blank(request.prior, request.org_oid)
        prior_after = replace(prior_before, merged_into=request.patient.key)
        base = patient or _blank(request.patient, request.org_oid)
        if request.event is PatientEvent.CHANGE_ID:
            # The new identifier carries the person's demographics over, unless the message has new ones.
            base = replace(
                base,
                patient_name=prior_before.patient_name,
                name_charset=prior_before.name_charset,
                birth_date=prior_before.birth_date,
                sex=prior_before.sex,
                org_oid=prior_before.org_oid or request.org_oid,
            )
        patient_after = request.demographics.applied_to(base)
        self._repository.write(
            changes=[
                (prior, prior_after, False),
                (patient, patient_after, request.event is PatientEvent.CHANGE_ID),
            ],
            entries=[
                self._entry(
                    request,
                    prior_before.patient_key,
                    Outcome.APPLIED,
                    prior,
                    prior_after,
                    request.patient.key,
                ),
                self._entry(
                    request,
                    patient_after.patient_key,
                    Outcome.APPLIED,
                    patient,
                    patient_after,
                    request.prior.key,
                ),
            ],
        )

    def _update(self, request: PatientChangeRequest, patient: PatientState | None) -> None:
        before = patient or _blank(request.patient, request.org_oid)
        after = request.demographics.applied_to(before)
        outcome = Outcome.APPLIED if after != before or patient is None else Outcome.UNCHANGED
        self._repository.write(
            changes=[(patient, after, False)],
            entries=[self._entry(request, after.patient_key, outcome, patient, after)],
        )

    def _record_unchanged(
        self, request: PatientChangeRequest, patient: PatientState | None, prior: PatientState | None
    ) -> None:
        entries = [self._entry(request, request.patient.key, Outcome.UNCHANGED, patient, patient)]
        if request.prior is not None:
            entries.append(
                self._entry(request, request.prior.key, Outcome.UNCHANGED, prior, prior, request.patient.key)
            )
        self._repository.record(entries)

    @staticmethod
    def _entry(
        request: PatientChangeRequest,
        key: str,
        outcome: Outcome,
        before: PatientState | None = None,
        after: PatientState | None = None,
        related_key: str | None = None,
        reason: str | None = None,
    ) -> ChangeEntry:
        return ChangeEntry(
            patient_key=key,
            change_id=request.change_id,
            event=request.event.value,
            outcome=outcome.value,
            message_control_id=request.message_control_id,
            sender=request.sender,
            org_oid=request.org_oid,
            received_at=request.received_at,
            message=request.message,
            before=before,
            after=after,
            related_key=related_key
            if related_key
            else (request.prior.key if request.prior and key != request.prior.key else None),
            reason=reason,
        )
