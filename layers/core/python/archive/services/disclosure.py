"""The disclosure log: what of a patient's data was disclosed, to whom, why, when and how, kept
as a tamper-evident hash chain per patient (``archive.model.disclosure``).

Three writers, one log:
- the archive's own disclosures (XDS ITI-43 / RAD-69 to another organisation; DICOM Q/R across
  organisations, should it ever be allowed): ``record``;
- customers' disclosure notifications, when they hand out images from their own systems:
  ``notify`` validates them (known patient, the notifying organisation controls every study, UTC
  times) and records them once per the customer's notification id;
- the anchoring job writes chain heads to the Object-Locked bucket: ``anchor``.

Readers: ``verify`` (the first broken link of each chain) and ``report`` (the patient's right of
access, supervisors), covering every identity merged into the patient.

XDS (the second half of this module): what an XDS caller may see of another organisation's data.
A result or document controlled by another organisation than the caller's is a disclosure. It is
lawful only for a purpose of use that allows it: treatment, or emergency treatment (marked as such
in the log). A patient's denial of disclosure hides the denied documents from every other
organisation, **also in an emergency** (a denial is the patient's explicit decision; emergency
access overrides the need for a treatment relationship, not the patient's refusal). The
controlling organisation's own reads are never filtered, but they are logged too.
:func:`record_disclosure` is the one way XDS reads reach the access log (every read) and the
hash-chained disclosure log (reads of another organisation's data); it is called before any byte
of the answer leaves.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from archive.audit import messages as audit
from archive.config import Settings
from archive.data.access_log import AccessEvent, AccessLog, Disclosed
from archive.data.disclosure_log import AnchorStore, DisclosureIndex, DisclosureRepository, DuplicateReference
from archive.data.index import IndexRepository
from archive.errors import (
    InvalidNotification,
    NotificationConflict,
    StudyNotControlled,
    UnknownPatient,
    UnknownStudy,
)
from archive.model.disclosure import (
    Anchor,
    ChainEntry,
    ChainVerdict,
    Disclosure,
    DisclosureKind,
    report_rows,
    utc_text,
    verify_chain,
)
from archive.model.xua import UserAssertion
from archive.services.audit import AuditTrail

MAX_CLOCK_SKEW = timedelta(minutes=5)
MAX_TEXT = 256
MAX_STUDIES = 1000


class PatientIndex(Protocol):
    """What the disclosure log needs to know of the index."""

    def resolve_patient(self, patient_key: str) -> str: ...

    def patient_exists(self, patient_key: str) -> bool: ...

    def study(self, study_uid: str) -> tuple[str | None, str | None] | None:
        """(patient key, controller OID) of a study, or None if unknown."""

    def identities_of(self, survivor_key: str) -> list[str]: ...


@dataclass(frozen=True)
class DisclosureNotification:
    """A customer's notification that it disclosed a patient's images from its own system."""

    notifier_oid: str
    reference: str
    patient_id: str
    issuer: str
    studies: tuple[str, ...]
    recipient_org_oid: str | None
    recipient_org_name: str | None
    recipient_person: str | None
    purpose_of_use: str
    channel: str
    disclosed_at: datetime

    @property
    def patient_key(self) -> str:
        return f"{self.patient_id}^^^{self.issuer}"

    @classmethod
    def from_json(
        cls, data: Any, *, notifier_oid: str, now: datetime | None = None
    ) -> DisclosureNotification:
        """Validate the submitted JSON (docs/disclosure-log.md); InvalidNotification names the field."""
        if not isinstance(data, Mapping):
            raise InvalidNotification("the body must be a JSON object")
        patient = data.get("patient")
        recipient = data.get("recipient")
        if not isinstance(patient, Mapping):
            raise InvalidNotification("patient must be an object with id and issuer", field="patient")
        if not isinstance(recipient, Mapping):
            raise InvalidNotification("recipient must be an object", field="recipient")
        studies = data.get("studies")
        if not isinstance(studies, list) or not studies or len(studies) > MAX_STUDIES:
            raise InvalidNotification(
                f"studies must list 1 to {MAX_STUDIES} Study Instance UIDs", field="studies"
            )
        for uid in studies:
            if not isinstance(uid, str) or not audit_uid(uid):
                raise InvalidNotification(f"{uid!r} is not a Study Instance UID", field="studies")
        recipient_oid = _text(recipient, "organisation_oid", "recipient.organisation_oid", required=False)
        recipient_name = _text(recipient, "organisation_name", "recipient.organisation_name", required=False)
        if not recipient_oid and not recipient_name:
            raise InvalidNotification(
                "recipient needs organisation_oid or organisation_name", field="recipient.organisation_oid"
            )
        return cls(
            notifier_oid=notifier_oid,
            reference=_text(data, "notification_id", "notification_id"),
            patient_id=_text(patient, "id", "patient.id"),
            issuer=_text(patient, "issuer", "patient.issuer"),
            studies=tuple(dict.fromkeys(studies)),
            recipient_org_oid=recipient_oid,
            recipient_org_name=recipient_name,
            recipient_person=_text(recipient, "person", "recipient.person", required=False),
            purpose_of_use=_text(data, "purpose_of_use", "purpose_of_use"),
            channel=_text(data, "channel", "channel"),
            disclosed_at=parse_utc(data.get("disclosed_at"), "disclosed_at", now=now),
        )


def audit_uid(value: str) -> bool:
    return (
        0 < len(value) <= 64
        and all(part.isdigit() for part in value.split("."))
        and not value.startswith(".")
    )


def _text(data: Mapping[str, Any], key: str, name: str, *, required: bool = True) -> Any:
    value = data.get(key)
    if value is None or value == "":
        if required:
            raise InvalidNotification(f"{name} is required", field=name)
        return None
    if not isinstance(value, str) or len(value) > MAX_TEXT or not value.strip():
        raise InvalidNotification(f"{name} must be text of at most {MAX_TEXT} characters", field=name)
    return value.strip()


def parse_utc(value: Any, name: str, *, now: datetime | None = None) -> datetime:
    """An ISO 8601 time that says it is UTC (``Z`` or ``+00:00``), not in the future."""
    if not isinstance(value, str) or not value:
        raise InvalidNotification(f"{name} is required (ISO 8601, UTC)", field=name)
    text = value.strip()
    if not (text.endswith("Z") or text.endswith("+00:00")):
        raise InvalidNotification(f"{name} must be UTC, ending in Z or +00:00: {value!r}", field=name)
    try:
        parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    except ValueError:
        raise InvalidNotification(f"{name} is not an ISO 8601 time: {value!r}", field=name) from None
    if (parsed - (now or datetime.now(UTC))) > MAX_CLOCK_SKEW:
        raise InvalidNotification(f"{name} is in the future: {value!r}", field=name)
    return parsed.astimezone(UTC)


@dataclass(frozen=True)
class Recorded:
    entry: ChainEntry
    created: bool  # False: the same notification was recorded before


class DisclosureLog:
    def __init__(
        self,
        repository: DisclosureRepository,
        index: PatientIndex,
        *,
        anchors: AnchorStore | None = None,
        audit_trail: AuditTrail | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._repository = repository
        self._index = index
        self._anchors = anchors
        self._audit = audit_trail
        self._clock = clock

    # --- writing ---------------------------------------------------------------------------

    def record(self, disclosure: Disclosure) -> ChainEntry:
        """Append one of the archive's own disclosures to the patient's chain (before the data leaves)."""
        return self._repository.append(
            disclosure.patient_key,
            entry_id=uuid.uuid4().hex,
            content=disclosure.content(),
            recorded_at=self._clock(),
        )

    def notify(self, notification: DisclosureNotification, *, address: str | None = None) -> Recorded:
        """Validate a customer's notification against the index and record it once."""
        try:
            recorded = self._notify(notification)
        except Exception as exc:
            self._audit_notification(
                notification, address, audit.Outcome.MINOR_FAILURE, f"{type(exc).__name__}: {exc}"
            )
            raise
        self._audit_notification(notification, address, audit.Outcome.SUCCESS, None)
        return recorded

    def _notify(self, n: DisclosureNotification) -> Recorded:
        survivor = self._index.resolve_patient(n.patient_key)
        if not self._index.patient_exists(survivor):
            raise UnknownPatient(f"patient {n.patient_id} (issuer {n.issuer}) is not known to the archive")
        for study_uid in n.studies:
            facts = self._index.study(study_uid)
            if facts is None:
                raise UnknownStudy(f"study {study_uid} is not in the archive")
            study_patient, controller = facts
            if controller != n.notifier_oid:
                raise StudyNotControlled(f"study {study_uid} is not controlled by {n.notifier_oid}")
            if not study_patient or self._index.resolve_patient(study_patient) != survivor:
                raise StudyNotControlled(f"study {study_uid} is not a study of patient {n.patient_id}")
        disclosure = Disclosure(
            patient_key=survivor,
            disclosed_at=n.disclosed_at,
            kind=DisclosureKind.NOTIFICATION,
            channel=n.channel,
            controller_oid=n.notifier_oid,
            recipient_org_oid=n.recipient_org_oid,
            recipient_org_name=n.recipient_org_name,
            recipient_person=n.recipient_person,
            purpose_of_use=n.purpose_of_use,
            studies=n.studies,
            recorded_by=n.notifier_oid,
            reference=n.reference,
        )
        try:
            entry = self._repository.append(
                survivor,
                entry_id=uuid.uuid4().hex,
                content=disclosure.content(),
                recorded_at=self._clock(),
                reference=(n.notifier_oid, n.reference),
            )
        except DuplicateReference as duplicate:
            if dict(duplicate.entry.content) != disclosure.content():
                raise NotificationConflict(
                    f"notification {n.reference} of {n.notifier_oid} was recorded before with other content"
                ) from None
            return Recorded(duplicate.entry, created=False)
        return Recorded(entry, created=True)

    def _audit_notification(
        self, n: DisclosureNotification, address: str | None, outcome: audit.Outcome, description: str | None
    ) -> None:
        if self._audit is None:
            return
        self._audit.record(
            audit.disclosure(
                source=self._audit.source,
                event_id=audit.IMPORT,
                event_type=audit.DISCLOSURE_NOTIFICATION,
                outcome=outcome,
                sender=audit.ActiveParticipant(n.notifier_oid, True, audit.SOURCE_ROLE, address),
                recipient=audit.ActiveParticipant(
                    n.recipient_org_oid or n.recipient_org_name or "unknown", False, audit.DESTINATION_ROLE
                ),
                person=audit.ActiveParticipant(n.recipient_person, False) if n.recipient_person else None,
                patient_key=n.patient_key,
                objects=[audit.study(uid, lifecycle="11") for uid in n.studies],
                purposes_of_use=(audit.Code(n.purpose_of_use, "purposeofuse", n.purpose_of_use),),
                outcome_description=description,
            )
        )

    # --- anchoring -------------------------------------------------------------------------

    def anchor(self, *, lookback: timedelta, now: datetime | None = None) -> int:
        """Write the head of every chain that grew within ``lookback`` to the Object-Locked bucket;
        returns how many anchors were new. Runs periodically (hourly on AWS); overlapping windows
        are harmless (an existing anchor is left as it is)."""
        if self._anchors is None:
            raise ValueError("no anchor store configured")
        now = now or self._clock()
        written = 0
        for patient_key in self._repository.chains_written(now - lookback, now):
            head = self._repository.head(patient_key)
            if head is not None and self._anchors.put(
                Anchor(patient_key, head.seq, head.entry_hash, utc_text(now))
            ):
                written += 1
        return written

    # --- reading ---------------------------------------------------------------------------

    def identities(self, patient_key: str) -> list[str]:
        return self._index.identities_of(self._index.resolve_patient(patient_key))

    def verify(self, patient_key: str) -> list[ChainVerdict]:
        """One verdict per chain of the patient (the survivor and identities merged into it)."""
        verdicts = []
        for key in self.identities(patient_key):
            anchors = self._anchors.latest(key) if self._anchors is not None else []
            verdicts.append(verify_chain(key, self._repository.entries(key), anchors))
        return verdicts

    def report(self, patient_key: str) -> list[dict[str, Any]]:
        """Every disclosure of the patient, in the order they happened (UTC)."""
        rows = []
        for key in self.identities(patient_key):
            for row in report_rows(self._repository.entries(key)):
                rows.append({"patient": key, **row})
        return sorted(rows, key=lambda r: (r["disclosed_at"] or "", r["patient"], r["seq"]))


def build_disclosure_log(settings: Settings, audit_trail: AuditTrail | None = None) -> DisclosureLog:
    """The disclosure log as configured: DynamoDB chains, anchors in the audit bucket (if set)."""
    return DisclosureLog(
        DisclosureRepository(settings),
        DisclosureIndex(IndexRepository(settings)),
        anchors=AnchorStore(settings) if settings.audit_bucket else None,
        audit_trail=audit_trail,
    )


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
    chain: DisclosureLog | None = None,
) -> int:
    """Write who (subject, organisation), purpose, patient, which documents/instances, transaction,
    wsa:MessageID and UTC time to the access log, and each item another organisation controls to
    the patient's hash-chained disclosure log (``chain``). Raises if either cannot be written: the
    caller must not send the data then."""
    items = list(items)
    at = at or datetime.now(UTC)
    if chain is not None:
        for item in items:
            if item.controller and item.controller != caller.org_oid:
                chain.record(
                    Disclosure(
                        patient_key=access_log_key(item.patient_cx),
                        disclosed_at=at,
                        kind=DisclosureKind.XDS,
                        channel=transaction,
                        controller_oid=item.controller,
                        recipient_org_oid=caller.org_oid,
                        recipient_org_name=None,
                        recipient_person=caller.subject,
                        purpose_of_use=caller.purpose,
                        studies=(item.study_uid,) if item.study_uid else (),
                        documents=tuple(item.identifiers),
                        details={"message_id": message_id, "emergency": str(caller.emergency).lower()},
                    )
                )
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
        at=at,
    )
    return log.record(
        event,
        [
            Disclosed(access_log_key(i.patient_cx), i.controller, i.study_uid, list(i.identifiers))
            for i in items
        ],
    )
