"""Patient administration values: identities as the index holds them, the changes HL7 asks for,
and the history of what each change did."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from archive.model.identity import PatientIdentity


class PatientEvent(StrEnum):
    MERGE = "A40"
    CHANGE_ID = "A47"
    UPDATE = "A08"
    UPDATE_PERSON = "A31"

    @property
    def moves_identity(self) -> bool:
        return self in (PatientEvent.MERGE, PatientEvent.CHANGE_ID)


class Outcome(StrEnum):
    APPLIED = "APPLIED"
    UNCHANGED = "UNCHANGED"
    REFUSED = "REFUSED"
    DUPLICATE = "DUPLICATE"  # this very message was applied before (not recorded again)


@dataclass(frozen=True)
class NewDemographics:
    """Demographics a message sets. None = leave as is; "" = remove (HL7 null)."""

    patient_name: str | None = None
    name_charset: str | None = None  # DICOM Specific Character Set the name needs, if non-ASCII
    birth_date: str | None = None
    sex: str | None = None
    # PID-29 (or PID-30 "N": "" retracts a recorded death); YYYYMMDD. Retention counts from it.
    death_date: str | None = None

    @property
    def sent(self) -> frozenset[str]:
        """The demographic fields the message has (a value or the HL7 null)."""
        return frozenset(
            name
            for name, value in (
                ("patient_name", self.patient_name),
                ("birth_date", self.birth_date),
                ("sex", self.sex),
                ("death_date", self.death_date),
            )
            if value is not None
        )

    def applied_to(self, state: PatientState) -> PatientState:
        values: dict[str, Any] = {}
        if self.patient_name is not None:
            values["patient_name"] = self.patient_name or None
            values["name_charset"] = self.name_charset if self.patient_name else None
        if self.birth_date is not None:
            values["birth_date"] = self.birth_date or None
        if self.sex is not None:
            values["sex"] = self.sex or None
        if self.death_date is not None:
            values["death_date"] = self.death_date or None
        return replace(state, **values)


@dataclass(frozen=True)
class PatientChangeRequest:
    """One accepted HL7 message, as queued for the patient_update Lambda."""

    event: PatientEvent
    patient: PatientIdentity  # PID-3: the survivor (A40), the new ID (A47), the patient (A08/A31)
    prior: PatientIdentity | None  # MRG-1 (A40/A47)
    demographics: NewDemographics
    org_oid: str
    sender: str
    message_control_id: str
    received_at: datetime
    message: str
    extra: Mapping[str, str] = field(default_factory=dict)

    @property
    def message_id(self) -> str:
        """Sender + MSH-10: the same message sent twice has the same id (SQS deduplication)."""
        return hashlib.sha256(f"{self.sender}\x00{self.message_control_id}".encode()).hexdigest()

    @property
    def change_id(self) -> str:
        return f"{self.received_at.astimezone(UTC).isoformat(timespec='milliseconds')}#{self.message_id[:20]}"

    @property
    def group_id(self) -> str:
        """FIFO order is per patient: the identity the message changes (the prior one of a merge)."""
        key = (self.prior or self.patient).key
        return hashlib.sha256(key.encode()).hexdigest()

    def to_json(self) -> dict[str, Any]:
        return {
            "event": self.event.value,
            "patient": {"patient_id": self.patient.patient_id, "issuer": self.patient.issuer},
            "prior": (
                {"patient_id": self.prior.patient_id, "issuer": self.prior.issuer} if self.prior else None
            ),
            "demographics": {
                k: v
                for k, v in (
                    ("patient_name", self.demographics.patient_name),
                    ("name_charset", self.demographics.name_charset),
                    ("birth_date", self.demographics.birth_date),
                    ("sex", self.demographics.sex),
                    ("death_date", self.demographics.death_date),
                )
                if v is not None
            },
            "org_oid": self.org_oid,
            "sender": self.sender,
            "message_control_id": self.message_control_id,
            "received_at": self.received_at.astimezone(UTC).isoformat(),
            "message": self.message,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PatientChangeRequest:
        prior = data.get("prior")
        return cls(
            event=PatientEvent(data["event"]),
            patient=PatientIdentity(data["patient"]["patient_id"], data["patient"]["issuer"]),
            prior=PatientIdentity(prior["patient_id"], prior["issuer"]) if prior else None,
            demographics=NewDemographics(**data.get("demographics", {})),
            org_oid=data["org_oid"],
            sender=data["sender"],
            message_control_id=data["message_control_id"],
            received_at=datetime.fromisoformat(data["received_at"]),
            message=data["message"],
        )


@dataclass(frozen=True)
class ListenerRefusal:
    """A message the listener refused (AE/AR) after it knew the sender, queued only to be recorded.

    Recorded in the history of each identity it named, or in the organisation's refusal log when it
    named none it could resolve. It never changes an identity and does not mark the message as
    handled: the corrected message may come again with the same MSH-10.
    """

    event: str
    org_oid: str
    sender: str
    message_control_id: str
    received_at: datetime
    reason: str
    message: str
    patient_keys: tuple[str, ...] = ()

    KIND = "refusal"
    # What of a refused message is kept: enough to see what was sent, small enough to always fit.
    MESSAGE_KEPT = 16 * 1024

    @property
    def change_id(self) -> str:
        digest = hashlib.sha256(
            f"{self.sender}\x00{self.message_control_id}\x00{self.message}".encode()
        ).hexdigest()
        return f"{self.received_at.astimezone(UTC).isoformat(timespec='milliseconds')}#{digest[:20]}"

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.KIND,
            "event": self.event,
            "org_oid": self.org_oid,
            "sender": self.sender,
            "message_control_id": self.message_control_id,
            "received_at": self.received_at.astimezone(UTC).isoformat(),
            "reason": self.reason,
            "message": self.message[: self.MESSAGE_KEPT],
            "patient_keys": list(self.patient_keys),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ListenerRefusal:
        return cls(
            event=data["event"],
            org_oid=data["org_oid"],
            sender=data["sender"],
            message_control_id=data["message_control_id"],
            received_at=datetime.fromisoformat(data["received_at"]),
            reason=data["reason"],
            message=data["message"],
            patient_keys=tuple(data.get("patient_keys", ())),
        )


@dataclass(frozen=True)
class ChangeResult:
    outcome: Outcome
    reason: str | None = None
    studies_updated: int = 0


@dataclass(frozen=True)
class PatientState:
    """A patient identity as the index holds it (the before/after of the history)."""

    patient_key: str
    patient_id: str
    issuer: str
    patient_name: str | None = None
    name_charset: str | None = None
    birth_date: str | None = None
    sex: str | None = None
    merged_into: str | None = None
    org_oid: str | None = None
    death_date: str | None = None

    @property
    def identity(self) -> PatientIdentity:
        return PatientIdentity(self.patient_id, self.issuer)

    def as_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class ChangeEntry:
    """One history item: what one message did (or was refused to do) to one identity."""

    patient_key: str
    change_id: str
    event: str
    outcome: str
    message_control_id: str
    sender: str
    org_oid: str
    received_at: datetime
    message: str
    before: PatientState | None = None
    after: PatientState | None = None
    related_key: str | None = None
    reason: str | None = None
