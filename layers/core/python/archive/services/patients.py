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

A message changes only what its sending organisation controls: an identity shared with another
organisation (a hetu with both organisations' studies) is neither merged nor renamed; the sender's
own studies move or take the new values, and a message about an identity the sender holds nothing
of is refused (NotControlledBySender, HL7 204). Each message (sender + MSH-10) is applied once,
however late it is re-sent: a marker item is written in the same transaction as its change.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime

from archive.data.patients import (
    MESSAGE_MARKER_CHANGE,
    PatientRepository,
    message_marker_key,
    refusal_log_key,
)
from archive.errors import (
    ChangeConflict,
    ConfigurationError,
    DuplicatePatient,
    InvalidMerge,
    NotControlledBySender,
    PatientMerged,
    PatientUpdateRefused,
)
from archive.model.identity import PatientIdentity
from archive.model.patients import (
    ChangeEntry,
    ChangeResult,
    ListenerRefusal,
    Outcome,
    PatientChangeRequest,
    PatientEvent,
    PatientState,
)
from archive.model.retention import parse_study_date

MAX_ATTEMPTS = 4


@dataclass(frozen=True)
class Decision:
    """What ``apply`` will do with a request that is not refused."""

    unchanged: bool = False  # done before (the same merge again)
    # The identity is shared with another organisation: the sender changes only its own studies;
    # the Patient records (merge pointer, demographics) stay as they are.
    studies_only: bool = False
    note: str | None = None


def _blank(identity: PatientIdentity, org_oid: str) -> PatientState:
    return PatientState(identity.key, identity.patient_id, identity.issuer, org_oid=org_oid)


class PatientService:
    def __init__(self, repository: PatientRepository) -> None:
        self._repository = repository

    # --- before acknowledging --------------------------------------------------------------

    def handled(self, request: PatientChangeRequest) -> bool:
        """Whether this message (sender + MSH-10) was handled before, however long ago."""
        return self._repository.message_handled(request.message_id)

    def check(self, request: PatientChangeRequest) -> None:
        """Refuse now what ``apply`` would refuse (PatientMerged, DuplicatePatient, InvalidMerge,
        NotControlledBySender)."""
        patient = self._repository.get(request.patient.key)
        prior = self._repository.get(request.prior.key) if request.prior else None
        self._decide(request, patient, prior)

    def _decide(
        self, request: PatientChangeRequest, patient: PatientState | None, prior: PatientState | None
    ) -> Decision:
        """Raise if the request must be refused; else what applying it means."""
        if request.prior is None:
            if patient is not None and patient.merged_into:
                raise PatientMerged(f"patient {patient.patient_key} was merged into {patient.merged_into}")
            return self._scope(request, request.patient.key, patient)
        if request.prior.key == request.patient.key:
            raise InvalidMerge(f"cannot merge patient {request.patient.key} with itself")
        if prior is not None and prior.merged_into == request.patient.key:
            return Decision(unchanged=True)  # the same merge again (perhaps with another MSH-10)
        if prior is not None and prior.merged_into:
            raise PatientMerged(f"prior patient {prior.patient_key} was merged into {prior.merged_into}")
        if patient is not None and patient.merged_into:
            raise PatientMerged(
                f"patient {patient.patient_key} was merged into {patient.merged_into}; "
                "a merge the other way round would make a loop"
            )
        if request.event is PatientEvent.CHANGE_ID and patient is not None:
            raise DuplicatePatient(f"the new identifier {patient.patient_key} is in use already")
        return self._scope(request, request.prior.key, prior)

    def _scope(self, request: PatientChangeRequest, key: str, state: PatientState | None) -> Decision:
        """What of the identity ``key`` the sending organisation controls (the identity a merge
        moves, or the one an update changes). Its own studies, always; the identity itself (merge
        pointer, demographics) only while no other organisation holds it."""
        org = request.org_oid
        owner = state is None or state.org_oid in (None, org)
        controllers = self._repository.study_controllers(key) - {None}
        if owner and (request.prior is None or controllers <= {org}):
            return Decision()
        if org in controllers:
            others = ", ".join(sorted(str(c) for c in controllers - {org})) or str(state and state.org_oid)
            return Decision(
                studies_only=True,
                note=f"{key} is shared with {others}: applied to the studies of {org} only",
            )
        holder = (
            state.org_oid if state is not None and not owner else ", ".join(sorted(map(str, controllers)))
        )
        raise NotControlledBySender(f"{org} controls nothing of {key}: it is held by {holder}")

    # --- an operator ------------------------------------------------------------------------

    def record_death(
        self, identity: PatientIdentity, death_date: str, *, by: str, reason: str, at: datetime
    ) -> PatientState:
        """An operator records a patient's death (YYYYMMDD) or retracts it (""), with who and why
        in the patient's history. Retention is then recomputed by a job (services.retention)."""
        if death_date and not (
            len(death_date) == 8 and death_date.isdigit() and parse_study_date(death_date) is not None
        ):
            raise ConfigurationError(f"death date {death_date[:20]!r} is not a date YYYYMMDD")
        patient = self._repository.get(identity.key)
        if patient is None:
            raise ConfigurationError(f"no patient {identity.key} in the index")
        if patient.merged_into:
            raise PatientMerged(f"patient {patient.patient_key} was merged into {patient.merged_into}")
        after = replace(patient, death_date=death_date or None)
        self._repository.write(
            changes=[(patient, after, False)],
            entries=[
                ChangeEntry(
                    patient_key=patient.patient_key,
                    change_id=f"{at.astimezone(UTC).isoformat(timespec='milliseconds')}#operator",
                    event="DEATH" if death_date else "DEATH-RETRACTED",
                    outcome=Outcome.APPLIED.value if after != patient else Outcome.UNCHANGED.value,
                    message_control_id="",
                    sender=f"operator {by}",
                    org_oid=patient.org_oid or "",
                    received_at=at,
                    message=reason,
                    before=patient,
                    after=after,
                    reason=reason,
                )
            ],
        )
        return after

    # --- in the Lambda ---------------------------------------------------------------------

    def apply(self, request: PatientChangeRequest) -> ChangeResult:
        """Apply the request once, however often it is delivered or re-sent; safe against
        concurrent requests."""
        main_key = request.patient.key
        if self._repository.message_handled(request.message_id):
            return self._finish(request, Outcome.DUPLICATE)
        for _ in range(MAX_ATTEMPTS):
            patient = self._repository.get(main_key)
            prior = self._repository.get(request.prior.key) if request.prior else None
            try:
                decision = self._decide(request, patient, prior)
            except PatientUpdateRefused as exc:
                entry = self._entry(request, main_key, Outcome.REFUSED, reason=str(exc))
                self._repository.record([entry, self._marker(request, Outcome.REFUSED)])
                return ChangeResult(Outcome.REFUSED, str(exc))
            try:
                if decision.unchanged:
                    self._record_unchanged(request, patient, prior)
                    return self._finish(request, Outcome.UNCHANGED)
                if request.prior is not None:
                    self._move(request, patient, prior, decision)
                else:
                    self._update(request, patient, decision)
            except ChangeConflict:
                if self._already(request):
                    return self._finish(request, Outcome.DUPLICATE)
                continue  # someone else changed one of the identities: decide again
            return self._finish(request, Outcome.APPLIED)
        raise ChangeConflict(f"{request.event} {request.message_control_id}: too many concurrent changes")

    def _already(self, request: PatientChangeRequest) -> bool:
        # The marker (sender + MSH-10) catches a re-send after any delay; the history item a
        # redelivery of the very same queued message (and messages queued before markers existed).
        return self._repository.message_handled(request.message_id) or self._repository.change_recorded(
            request.patient.key, request.change_id
        )

    def record_refusal(self, refusal: ListenerRefusal) -> ChangeResult:
        """Record a message the listener refused; idempotent."""
        keys = refusal.patient_keys or (refusal_log_key(refusal.org_oid),)
        self._repository.record(
            ChangeEntry(
                patient_key=key,
                change_id=refusal.change_id,
                event=refusal.event,
                outcome=Outcome.REFUSED.value,
                message_control_id=refusal.message_control_id,
                sender=refusal.sender,
                org_oid=refusal.org_oid,
                received_at=refusal.received_at,
                message=refusal.message,
                reason=refusal.reason,
            )
            for key in keys
        )
        return ChangeResult(Outcome.REFUSED, refusal.reason)

    def _finish(self, request: PatientChangeRequest, outcome: Outcome) -> ChangeResult:
        """Bring the sender's studies in line with the identity (again, after a crash or redelivery).

        Where the sender holds the surviving identity, its studies take the identity's values; where
        another organisation does, they take the values the message sent, and nothing else changes.
        """
        patient = self._repository.get(request.patient.key)
        if patient is None or patient.merged_into:
            return ChangeResult(outcome)
        org = request.org_oid
        fields: frozenset[str] | None = None
        if patient.org_oid not in (None, org):
            fields = request.demographics.sent
            patient = request.demographics.applied_to(patient)
        studies = 0
        if request.prior is not None:
            studies += self._repository.update_studies(request.prior.key, patient, org, fields)
        studies += self._repository.update_studies(patient.patient_key, patient, org, fields)
        return ChangeResult(outcome, studies_updated=studies)

    def _move(
        self,
        request: PatientChangeRequest,
        patient: PatientState | None,
        prior: PatientState | None,
        decision: Decision,
    ) -> None:
        assert request.prior is not None
        org = request.org_oid
        changes: list[tuple[PatientState | None, PatientState, bool]] = []
        unmerged: list[str] = []
        prior_before = prior or _blank(request.prior, org)
        if decision.studies_only:
            prior_after = prior_before
            unmerged.append(prior_before.patient_key)
        else:
            prior_after = replace(prior_before, merged_into=request.patient.key)
            changes.append((prior, prior_after, False))
        base = patient or _blank(request.patient, org)
        if request.event is PatientEvent.CHANGE_ID and not decision.studies_only:
            # The new identifier carries the person's demographics over, unless the message has new ones.
            base = replace(
                base,
                patient_name=prior_before.patient_name,
                name_charset=prior_before.name_charset,
                birth_date=prior_before.birth_date,
                sex=prior_before.sex,
                org_oid=prior_before.org_oid or org,
            )
        if patient is None or patient.org_oid in (None, org):
            patient_after = request.demographics.applied_to(base)
            changes.append((patient, patient_after, request.event is PatientEvent.CHANGE_ID))
        else:
            patient_after = patient  # another organisation's identity: only the sender's studies move to it
            unmerged.append(patient.patient_key)
        self._repository.write(
            changes=changes,
            unmerged=unmerged,
            entries=[
                self._entry(
                    request,
                    prior_before.patient_key,
                    Outcome.APPLIED,
                    prior,
                    prior_after,
                    request.patient.key,
                    reason=decision.note,
                ),
                self._entry(
                    request,
                    patient_after.patient_key,
                    Outcome.APPLIED,
                    patient,
                    patient_after,
                    request.prior.key,
                    reason=decision.note,
                ),
                self._marker(request, Outcome.APPLIED),
            ],
        )

    def _update(
        self, request: PatientChangeRequest, patient: PatientState | None, decision: Decision
    ) -> None:
        before = patient or _blank(request.patient, request.org_oid)
        if decision.studies_only:
            # Another organisation holds the identity: the record stays; _finish updates the studies.
            self._repository.write(
                changes=[],
                unmerged=[before.patient_key],
                entries=[
                    self._entry(
                        request, before.patient_key, Outcome.APPLIED, patient, patient, reason=decision.note
                    ),
                    self._marker(request, Outcome.APPLIED),
                ],
            )
            return
        after = request.demographics.applied_to(before)
        outcome = Outcome.APPLIED if after != before or patient is None else Outcome.UNCHANGED
        self._repository.write(
            changes=[(patient, after, False)],
            entries=[
                self._entry(request, after.patient_key, outcome, patient, after),
                self._marker(request, outcome),
            ],
        )

    def _record_unchanged(
        self, request: PatientChangeRequest, patient: PatientState | None, prior: PatientState | None
    ) -> None:
        entries = [self._entry(request, request.patient.key, Outcome.UNCHANGED, patient, patient)]
        if request.prior is not None:
            entries.append(
                self._entry(request, request.prior.key, Outcome.UNCHANGED, prior, prior, request.patient.key)
            )
        entries.append(self._marker(request, Outcome.UNCHANGED))
        self._repository.record(entries)

    @staticmethod
    def _marker(request: PatientChangeRequest, outcome: Outcome) -> ChangeEntry:
        """The once-only record of the message (sender + MSH-10), written with its effect."""
        return ChangeEntry(
            patient_key=message_marker_key(request.message_id),
            change_id=MESSAGE_MARKER_CHANGE,
            event=request.event.value,
            outcome=outcome.value,
            message_control_id=request.message_control_id,
            sender=request.sender,
            org_oid=request.org_oid,
            received_at=request.received_at,
            message=f"recorded in the history of {request.patient.key}",
            related_key=request.patient.key,
        )

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
