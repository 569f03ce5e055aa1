"""Accepting ADT messages: decode, validate, resolve the sender and the identifiers, check the
patient state and queue the change durably. The MLLP listener acknowledges what this returns and
maps what it raises (by type) to the ACK's codes.

Sending facility (MSH-4): either the OID of a registered organisation (as MSH-4.2 with MSH-4.3
``ISO``, or as MSH-4.1), or a facility name registered for an organisation in the HL7 facility
directory (``python -m archive.admin hl7-facility add``). A namespace-only assigning authority in
PID-3.4/MRG-1.4 (``^^^ADT1``) is translated through that facility's namespace map; an authority given
as an OID (``^^^&1.2.246.21&ISO``) is used as is. Either way the issuer must be one the organisation
trusts, exactly as for DICOM; an empty authority means the organisation's default issuer.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from archive.data.patients import FacilityRepository, PatientUpdateQueue, refusal_log_key
from archive.dicom.instance import PatientIdentity
from archive.errors import (
    HL7MessageError,
    MessageTooLargeToKeep,
    PatientUpdateRefused,
    QueueFailure,
    RequiredFieldMissing,
    UnknownAssigningAuthority,
    UnknownOrganisation,
    UnknownSendingFacility,
    UnsupportedMessageType,
    UnsupportedTriggerEvent,
    UntrustedAssigningAuthority,
)
from archive.hl7.message import (
    MAX_OID,
    OID,
    AdtMessage,
    MessageHeader,
    PatientIdentifier,
    decode,
    parse_adt,
    parse_header,
    require,
)
from archive.patients import (
    ListenerRefusal,
    NewDemographics,
    PatientChangeRequest,
    PatientEvent,
    PatientService,
)
from archive.registry import CachedRegistry, OrganisationInfo

LOG = logging.getLogger("archive.hl7")
SUPPORTED_EVENTS = {e.value: e for e in PatientEvent}


@dataclass(frozen=True)
class SendingFacility:
    org: OrganisationInfo
    issuer_namespaces: dict[str, str] = field(default_factory=dict)


class FacilityDirectory:
    """MSH-4 -> organisation, with a short cache (one GetItem per facility per ``ttl`` seconds)."""

    def __init__(self, registry: CachedRegistry, facilities: FacilityRepository, ttl: float = 30.0) -> None:
        self._registry = registry
        self._facilities = facilities
        self._ttl = ttl
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, SendingFacility | None]] = {}

    def resolve(self, header: MessageHeader) -> SendingFacility:
        hd = header.sending_facility
        for candidate in dict.fromkeys(c for c in (hd.oid, hd.namespace, hd.universal_id) if c):
            found = self._lookup(candidate)
            if found is not None:
                return found
        raise UnknownSendingFacility(
            f"sending facility {hd.encode()!r} is not registered", location="MSH^1^4"
        )

    def _lookup(self, name: str) -> SendingFacility | None:
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(name)
        if hit and hit[0] > now:
            return hit[1]
        value: SendingFacility | None = None
        facility = self._facilities.get(name)
        try:
            if facility is not None:
                value = SendingFacility(
                    self._registry.organisation(facility.org_oid), dict(facility.issuer_namespaces)
                )
            else:
                value = SendingFacility(self._registry.organisation(name))
        except UnknownOrganisation:
            value = None
        with self._lock:
            self._cache[name] = (now + (self._ttl if value else 2.0), value)
        return value


def issuer_of(identifier: PatientIdentifier, sender: SendingFacility) -> str | None:
    """The issuer OID that CX-4 names, or None where it names none this sender has mapped.

    Raises UnknownAssigningAuthority for an authority that is malformed (a universal ID whose type
    is not ISO, or that is not an OID): such an identifier is never moved to another namespace.
    Only an identifier with no authority at all takes the organisation's default issuer.
    """
    authority = identifier.authority
    if authority.universal_id or authority.universal_id_type:
        oid = authority.universal_id
        if authority.universal_id_type.upper() != "ISO" or len(oid) > MAX_OID or not OID.fullmatch(oid):
            raise UnknownAssigningAuthority(
                f"assigning authority {authority.encode()!r} of {identifier.id!r} is not an OID of type ISO",
                location=f"{identifier.location}^4",
            )
        mapped = sender.issuer_namespaces.get(authority.namespace) if authority.namespace else None
        if mapped and mapped != oid:
            raise UnknownAssigningAuthority(
                f"assigning authority {authority.encode()!r}: namespace {authority.namespace!r} stands for "
                f"{mapped}, not {oid}",
                location=f"{identifier.location}^4",
            )
        return oid
    if authority.namespace:
        return sender.issuer_namespaces.get(authority.namespace)
    return sender.org.default_issuer


def patient_identity(
    identifiers: tuple[PatientIdentifier, ...], sender: SendingFacility, what: str, location: str
) -> PatientIdentity:
    """The first identifier whose assigning authority is a trusted issuer of the organisation.

    Repetitions that name an issuer the organisation is not trusted for (or a namespace it has not
    mapped) are passed over; if none is left, the first such refusal is raised.
    """
    if not identifiers:
        raise RequiredFieldMissing(f"{what} is required", location=location)
    org = sender.org
    trusted = set(org.trusted_issuers) | ({org.default_issuer} if org.default_issuer else set())
    refusal: HL7MessageError | None = None
    for identifier in identifiers:
        issuer = issuer_of(identifier, sender)
        if issuer and issuer in trusted:
            return PatientIdentity(identifier.id, issuer)
        authority = identifier.authority
        if issuer is None:
            reason = (
                f"namespace {authority.namespace!r} of {identifier.id!r} is not mapped to an issuer for this facility"
                if authority.namespace
                else f"{identifier.id!r} has no assigning authority and {org.oid} has no default issuer"
            )
            refusal = refusal or UnknownAssigningAuthority(reason, location=f"{identifier.location}^4")
        else:
            refusal = refusal or UntrustedAssigningAuthority(
                f"{org.oid} is not trusted for identifiers issued by {issuer} ({identifier.id!r})",
                location=f"{identifier.location}^4",
            )
    assert refusal is not None
    raise refusal


class AdtIntake:
    def __init__(
        self,
        facilities: FacilityDirectory,
        patients: PatientService,
        queue: PatientUpdateQueue,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._facilities = facilities
        self._patients = patients
        self._queue = queue
        self._clock = clock

    def request_for(self, raw: bytes) -> PatientChangeRequest:
        """Decode and validate one message into the change it asks for (nothing is written)."""
        message, sender, received_at = self._sender_of(raw)
        return self._request(message, sender, received_at)

    def _sender_of(self, raw: bytes) -> tuple[AdtMessage, SendingFacility, datetime]:
        """The message and its sender; a message refused once the sender is known is recorded."""
        received_at = self._clock()
        text, _ = decode(raw)
        header = parse_header(text)
        require(header.message_type, "MSH-9 message type", "MSH^1^9")
        if header.message_type != "ADT":
            raise UnsupportedMessageType(
                f"message type {header.message_type!r} is not supported", location="MSH^1^9"
            )
        if header.trigger_event not in SUPPORTED_EVENTS:
            raise UnsupportedTriggerEvent(
                f"event {header.trigger_event!r} is not supported; the archive takes "
                f"{', '.join(SUPPORTED_EVENTS)}",
                location="MSH^1^9^1^2",
            )
        require(header.control_id, "MSH-10 message control ID", "MSH^1^10")
        require(header.sending_facility.encode(), "MSH-4 sending facility", "MSH^1^4")
        sender = self._facilities.resolve(header)
        try:
            message = parse_adt(raw)
        except HL7MessageError as exc:
            self._record_refusal(header, text, sender, received_at, None, exc)
            raise
        return message, sender, received_at

    def _request(
        self, message: AdtMessage, sender: SendingFacility, received_at: datetime
    ) -> PatientChangeRequest:
        header = message.header
        event = SUPPORTED_EVENTS[header.trigger_event]
        patient = patient_identity(message.patient_ids, sender, "PID-3 patient identifier", "PID^1^3")
        prior = None
        if event.moves_identity:
            prior = patient_identity(message.prior_ids, sender, "MRG-1 prior patient identifier", "MRG^1^1")
        d = message.demographics
        name_charset = None
        if d.patient_name and not d.patient_name.isascii():
            name_charset = message.dicom_character_set
        return PatientChangeRequest(
            event=event,
            patient=patient,
            prior=prior,
            demographics=NewDemographics(d.patient_name, name_charset, d.birth_date, d.sex),
            org_oid=sender.org.oid,
            sender=header.sender,
            message_control_id=header.control_id,
            received_at=received_at,
            message=message.text,
        )

    def accept(self, raw: bytes) -> PatientChangeRequest:
        """Validate, check against the index and queue durably; returns only once it is queued.

        A message handled before (the same sender and MSH-10, however long ago) is not queued
        again: it was applied once, and the sender gets AA again. A message refused once the sender
        is known is queued to be recorded (never applied) before the refusal is raised.
        """
        message, sender, received_at = self._sender_of(raw)
        request: PatientChangeRequest | None = None
        try:
            request = self._request(message, sender, received_at)
            if self._patients.handled(request):
                return request
            self._patients.check(request)
            body = request.to_json()
            self._queue.put(body, group_id=request.group_id, deduplication_id=request.message_id)
        except (HL7MessageError, PatientUpdateRefused, MessageTooLargeToKeep) as exc:
            self._record_refusal(message.header, message.text, sender, received_at, request, exc)
            raise
        return request

    def _record_refusal(
        self,
        header: MessageHeader,
        text: str,
        sender: SendingFacility,
        received_at: datetime,
        request: PatientChangeRequest | None,
        error: Exception,
    ) -> None:
        keys: tuple[str, ...] = ()
        if request is not None:
            keys = tuple(dict.fromkeys(i.key for i in (request.patient, request.prior) if i is not None))
        refusal = ListenerRefusal(
            event=header.trigger_event,
            org_oid=sender.org.oid,
            sender=header.sender,
            message_control_id=header.control_id,
            received_at=received_at,
            reason=f"refused by the listener: {type(error).__name__}: {error}",
            message=text,
            patient_keys=keys,
        )
        group = hashlib.sha256((keys[0] if keys else refusal_log_key(sender.org.oid)).encode()).hexdigest()
        try:
            self._queue.put(
                refusal.to_json(), group_id=group, deduplication_id=refusal.change_id.split("#")[1]
            )
        except (QueueFailure, MessageTooLargeToKeep):
            LOG.warning("could not queue the record of a refusal: %s", refusal.reason, exc_info=True)
