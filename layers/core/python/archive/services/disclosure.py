"""Disclosure: what an XDS caller may see of another organisation's data, and the log of it.

A result or document controlled by another organisation than the caller's is a disclosure. It is
lawful only for a purpose of use that allows it: treatment, or emergency treatment (marked as such
in the log). A patient's denial of disclosure hides the denied documents from every other
organisation, **also in an emergency** (a denial is the patient's explicit decision; emergency
access overrides the need for a treatment relationship, not the patient's refusal). The
controlling organisation's own reads are never filtered, but they are logged too.

:func:`record_disclosure` is the one way XDS reads reach the access/disclosure log; it is called
before any byte of the answer leaves.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from archive.data.access_log import AccessEvent, AccessLog, Disclosed
from archive.model.xua import UserAssertion

# HL7 v3 PurposeOfUse (2.16.840.1.113883.5.8) and the XSPA/IHE spellings of the same purposes.
TREATMENT = frozenset({"TREAT", "TREATMENT"})
EMERGENCY = frozenset({"ETREAT", "EMERGENCY", "EMERGENCYTREATMENT"})
ALL_DENIED = "*"


def normalised_patient(cx: str) -> str:
    """``ID^^^&OID&ISO`` whatever namespace the CX carries: one key per patient."""
    pid, _, authority = cx.partition("^^^")
    parts = authority.split("&")
    oid = parts[1] if len(parts) > 1 else parts[0]
    return f"{pid}^^^&{oid}&ISO"


def access_log_key(cx: str) -> str:
    """The access log's patient key (``<PatientID>^^^<issuer OID>``) of a CX."""
    pid, _, authority = cx.partition("^^^")
    parts = authority.split("&")
    return f"{pid}^^^{parts[1] if len(parts) > 1 else parts[0]}"


@dataclass(frozen=True)
class Caller:
    """Who asks, as the verified assertion says: person, organisation and purposes of use."""

    subject: str
    org_oid: str
    purposes: tuple[str, ...]
    roles: tuple[str, ...] = ()

    @classmethod
    def of(cls, user: UserAssertion) -> Caller:
        return cls(
            subject=user.subject_id or user.subject_name_id or "",
            org_oid=user.organization_oid or "",
            purposes=tuple(p.code.upper() for p in user.purposes_of_use),
            roles=tuple(r.code for r in user.roles),
        )

    @property
    def emergency(self) -> bool:
        return any(p in EMERGENCY for p in self.purposes)

    @property
    def may_receive_disclosures(self) -> bool:
        return any(p in TREATMENT or p in EMERGENCY for p in self.purposes)

    @property
    def purpose(self) -> str:
        return ",".join(self.purposes)


def may_see(caller: Caller, *, controller: str, unique_id: str, denied: Iterable[str]) -> bool:
    """Whether ``caller`` may see a document of ``controller`` whose patient denied ``denied``."""
    if controller == caller.org_oid:
        return True
    if not caller.may_receive_disclosures:
        return False
    denied = set(denied)
    return not (ALL_DENIED in denied or unique_id in denied)


@dataclass
class DisclosedItem:
    """What goes out about one patient of one controller: document uniqueIds or SOP Instance UIDs."""

    patient_cx: str
    controller: str | None
    identifiers: list[str] = field(default_factory=list)
    study_uid: str | None = None


def record_disclosure(
    log: AccessLog,
    *,
    caller: Caller,
    transaction: str,
    message_id: str,
    items: Iterable[DisclosedItem],
    outcome: str = "DISCLOSED",
    at: datetime | None = None,
) -> int:
    """Write who (subject, organisation), purpose, patient, which documents/instances, transaction,
    wsa:MessageID and UTC time to the access/disclosure log. Raises if it cannot be written: the
    caller must not send the data then."""
    event = AccessEvent(
        operation=transaction,
        calling_ae=caller.subject,
        org_oid=caller.org_oid,
        level=None,
        query={
            "subject": caller.subject,
            "purpose": caller.purpose,
            "emergency": "true" if caller.emergency else "false",
            "message_id": message_id,
        },
        outcome=outcome,
        at=at or datetime.now(UTC),
    )
    return log.record(
        event,
        [
            Disclosed(access_log_key(i.patient_cx), i.controller, i.study_uid, list(i.identifiers))
            for i in items
        ],
    )
