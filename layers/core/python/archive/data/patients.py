"""Data access for patient administration: identities, their studies and the change history.

Every write that changes an identity is one DynamoDB transaction that also appends its history
items, each conditioned on not existing yet, so a redelivered message changes nothing twice.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import UTC, datetime
from typing import Any

from pynamodb.exceptions import DoesNotExist, PutError, TransactWriteError, UpdateError
from pynamodb.transactions import TransactWrite

from archive.config import Settings
from archive.data.models import Patient, PatientChange, Study, TransactionConnection, conditional_check_failed
from archive.errors import ChangeConflict
from archive.model.patients import ChangeEntry, PatientState

# History items that are not an identity's: the once-only marker of each handled message (sender +
# MSH-10), and each organisation's log of messages the listener refused before naming an identity.
MESSAGE_MARKER_PREFIX = "hl7-message|"
MESSAGE_MARKER_CHANGE = "handled"
REFUSAL_LOG_PREFIX = "hl7-refusals|"


def message_marker_key(message_id: str) -> str:
    return f"{MESSAGE_MARKER_PREFIX}{message_id}"


def refusal_log_key(org_oid: str) -> str:
    return f"{REFUSAL_LOG_PREFIX}{org_oid}"


def _change_item(entry: ChangeEntry, applied_at: datetime) -> PatientChange:
    return PatientChange(
        entry.patient_key,
        entry.change_id,
        event=entry.event,
        outcome=entry.outcome,
        message_control_id=entry.message_control_id,
        sender=entry.sender,
        org_oid=entry.org_oid,
        received_at=entry.received_at,
        applied_at=applied_at,
        before=entry.before.as_json() if entry.before else None,
        after=entry.after.as_json() if entry.after else None,
        related_key=entry.related_key,
        reason=entry.reason,
        message=entry.message,
    )


def _state(item: Patient) -> PatientState:
    return PatientState(
        patient_key=item.patient_key,
        patient_id=item.patient_id,
        issuer=item.issuer,
        patient_name=item.patient_name,
        name_charset=item.name_charset,
        birth_date=item.birth_date,
        sex=item.sex,
        merged_into=item.merged_into,
        org_oid=item.org_oid,
        death_date=item.death_date,
    )


def _demographic_actions(state: PatientState) -> list[Any]:
    """SET the demographics of ``state``; REMOVE those it has not (HL7 null or never known)."""
    actions: list[Any] = []
    for name in ("patient_name", "name_charset", "birth_date", "sex", "death_date"):
        attribute = getattr(Patient, name)
        value = getattr(state, name)
        actions.append(attribute.set(value) if value else attribute.remove())
    return actions


class PatientRepository(TransactionConnection):
    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    # --- reads -----------------------------------------------------------------------------

    def get(self, patient_key: str) -> PatientState | None:
        try:
            return _state(Patient.get(patient_key, consistent_read=True))
        except DoesNotExist:
            return None

    def change_recorded(self, patient_key: str, change_id: str) -> bool:
        try:
            PatientChange.get(patient_key, change_id, consistent_read=True)
            return True
        except DoesNotExist:
            return False

    def message_handled(self, message_id: str) -> bool:
        """Whether a message with this id (sender + MSH-10) was handled, at any time before."""
        return self.change_recorded(message_marker_key(message_id), MESSAGE_MARKER_CHANGE)

    def study_controllers(self, patient_key: str) -> set[str | None]:
        """The organisations whose studies are filed under the identity (GSI by_patient)."""
        return {s.org_oid for s in Study.by_patient.query(patient_key)}

    def history(self, patient_key: str) -> list[dict[str, Any]]:
        """The identity's history, oldest first, as plain JSON-able dicts."""
        out = []
        for item in PatientChange.query(patient_key, consistent_read=True):
            record = {
                "patient_key": item.patient_key,
                "change_id": item.change_id,
                "event": item.event,
                "outcome": item.outcome,
                "message_control_id": item.message_control_id,
                "sender": item.sender,
                "org_oid": item.org_oid,
                "received_at": item.received_at.isoformat(),
                "applied_at": item.applied_at.isoformat(),
                "before": item.before,
                "after": item.after,
                "related_key": item.related_key,
                "reason": item.reason,
                "message": item.message,
            }
            out.append({k: v for k, v in record.items() if v is not None})
        return out

    def study_uids(self, patient_key: str) -> list[str]:
        return [s.study_uid for s in Study.by_patient.query(patient_key)]

    # --- identity changes ------------------------------------------------------------------

    def write(
        self,
        *,
        changes: Iterable[tuple[PatientState | None, PatientState, bool]],
        entries: Iterable[ChangeEntry],
        unmerged: Iterable[str] = (),
        now: datetime | None = None,
    ) -> None:
        """Apply identity changes and append their history in one transaction.

        ``changes`` are (before, after, must_be_new): each identity is written only if it is not
        merged away (and, with ``must_be_new``, only if it does not exist), so a concurrent merge or
        identifier change cannot slip under this one; ``unmerged`` are keys the change reads but does
        not write, checked the same way. Raises ChangeConflict if a condition failed.
        """
        now = now or datetime.now(UTC)
        try:
            with TransactWrite(connection=self._connection()) as tx:
                for before, after, must_be_new in changes:
                    actions = [
                        Patient.patient_id.set(after.patient_id),
                        Patient.issuer.set(after.issuer),
                        Patient.updated_at.set(now),
                        *_demographic_actions(after),
                    ]
                    if after.org_oid:
                        actions.append(Patient.org_oid.set(Patient.org_oid | after.org_oid))
                    if after.merged_into:
                        actions += [Patient.merged_into.set(after.merged_into), Patient.merged_at.set(now)]
                    condition = Patient.merged_into.does_not_exist()
                    if must_be_new or before is None:
                        condition = condition & Patient.patient_key.does_not_exist()
                    tx.update(Patient(after.patient_key), actions=actions, condition=condition)
                for key in unmerged:
                    tx.condition_check(Patient, key, condition=Patient.merged_into.does_not_exist())
                for entry in entries:
                    tx.save(_change_item(entry, now), condition=PatientChange.change_id.does_not_exist())
        except TransactWriteError as exc:
            reasons = [getattr(r, "code", None) for r in (exc.cancellation_reasons or [])]
            if "ConditionalCheckFailed" in reasons:
                raise ChangeConflict(f"a concurrent change won: {reasons}") from exc
            raise

    def record(self, entries: Iterable[ChangeEntry], now: datetime | None = None) -> None:
        """Append history items that change no identity (refusals, no-ops); idempotent."""
        now = now or datetime.now(UTC)
        for entry in entries:
            try:
                _change_item(entry, now).save(condition=PatientChange.change_id.does_not_exist())
            except PutError as exc:
                if not conditional_check_failed(exc):
                    raise

    # --- studies ---------------------------------------------------------------------------

    def update_studies(
        self,
        from_key: str,
        patient: PatientState,
        org_oid: str,
        fields: Collection[str] | None = None,
    ) -> int:
        """Point the studies of ``from_key`` that ``org_oid`` controls at ``patient``.

        Sets their patient key, ID and issuer, and the demographics named in ``fields``
        (``patient_name``, ``birth_date``, ``sex``; all when None) from ``patient``. Other
        organisations' studies of the same identity are never touched. Each study is updated only
        while it still belongs to ``from_key`` (or already to the patient), so a rerun after a crash
        finishes the job and changes nothing twice.
        """
        count = 0
        for study in Study.by_patient.query(from_key):
            if study.org_oid != org_oid:
                continue
            actions: list[Any] = [
                Study.patient_key.set(patient.patient_key),
                Study.patient_id.set(patient.patient_id),
                Study.issuer.set(patient.issuer),
            ]
            for name, study_attr, value in (
                ("patient_name", Study.patient_name, patient.patient_name),
                ("birth_date", Study.patient_birth_date, patient.birth_date),
                ("sex", Study.patient_sex, patient.sex),
            ):
                if fields is None or name in fields:
                    actions.append(study_attr.set(value) if value else study_attr.remove())
            try:
                Study(study.study_uid).update(
                    actions=actions,
                    condition=(Study.patient_key == from_key) | (Study.patient_key == patient.patient_key),
                )
                count += 1
            except UpdateError as exc:
                if not conditional_check_failed(exc):
                    raise
        return count
