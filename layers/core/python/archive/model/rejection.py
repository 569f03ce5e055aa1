"""IHE IOCM rejection notes as domain values: which instances a note rejects, and why.

A rejection note is a Key Object Selection document whose Document Title is one of the four
codes below (PS3.16 CID 7011); it lists the rejected instances in its Current Requested Procedure
Evidence Sequence. The archive keeps the rejected bytes and hides the instances (docs/conformance-iocm.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

KEY_OBJECT_SELECTION_DOCUMENT = "1.2.840.10008.5.1.4.1.1.88.59"

QUALITY = "113001"
PATIENT_SAFETY = "113037"
INCORRECT_WORKLIST_ENTRY = "113038"
RETENTION_EXPIRED = "113039"

# (code value, DCM) -> code meaning, as PS3.16 spells it.
REJECTION_TITLES: dict[str, str] = {
    QUALITY: "Rejected for Quality Reasons",
    PATIENT_SAFETY: "Rejected for Patient Safety Reasons",
    INCORRECT_WORKLIST_ENTRY: "Incorrect Modality Worklist Entry",
    RETENTION_EXPIRED: "Data Retention Policy Expired",
}

ACTIVE = "ACTIVE"
APPLYING = "APPLYING"
REVOKED = "REVOKED"


@dataclass(frozen=True)
class InstanceReference:
    """One instance named in a rejection note's evidence."""

    study_uid: str
    series_uid: str
    sop_class_uid: str
    sop_instance_uid: str


@dataclass(frozen=True)
class RejectionNote:
    """What a received rejection note says: its own identity, its reason code and its references."""

    sop_instance_uid: str
    study_uid: str
    code: str
    references: tuple[InstanceReference, ...]

    @property
    def meaning(self) -> str:
        return REJECTION_TITLES[self.code]

    @property
    def study_uids(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(ref.study_uid for ref in self.references))


@dataclass(frozen=True)
class RejectionRecord:
    """A rejection as the archive keeps it: the note, who sent it, where its bytes are, its state."""

    note_uid: str
    code: str
    org_oid: str
    sending_ae: str
    received_at: datetime
    references: tuple[InstanceReference, ...]
    state: str  # APPLYING | ACTIVE | REVOKED
    s3_key: str
    sha256: str
    revoked_at: datetime | None = None
    revoked_by: str | None = None
    revoke_reason: str | None = None


@dataclass(frozen=True)
class RejectedInstance:
    """An instance hidden by a rejection: what registration and IAN need to withdraw it."""

    sop_instance_uid: str
    sop_class_uid: str
    study_uid: str
    series_uid: str
    code: str
    note_uid: str
