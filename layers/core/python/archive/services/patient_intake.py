"""Accepting ADT messages: decode, validate, resolve the sender and the identifiers, check the
patient state and queue the change durably. The MLLP listener acknowledges what this returns and
maps what it raises (by type) to the ACK's codes.

Sending facility (MSH-4): either the OID of a registered organisation (as MSH-4.2 with MSH-4.3
``ISO``, or as MSH-4.1), or a facility name registered for an organisation in the HL7 facility
directory (``python -m admin hl7-facility add``). A namespace-only assigning authority in
PID-3.4/MRG-1.4 (``^^^ADT1``) is translated through that facility's namespace map; an authority given
as an OID (``^^^&1.2.246.21&ISO``) is used as is, and a malformed one is refused, never moved to
another namespace. Either way the issuer must be one the organisation trusts, exactly as for DICOM;
only an empty authority means the organisation's default issuer, where it has one.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from archive.data.patients import refusal_log_key
from archive.data.queues import PatientUpdateQueue
from archive.errors import (
    HL7MessageError,
    MessageTooLargeToKeep,
    PatientUpdateRefused,
    QueueFailure,
    RequiredFieldMissing,
    UnknownAssigningAuthority,
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
from archive.model.identity import PatientIdentity, is_trusted_issuer
from archive.model.organisations import SendingFacility
from archive.model.patients import ListenerRefusal, NewDemographics, PatientChangeRequest, PatientEvent
from archive.services.directory import CachedRegistry
from archive.services.patients import PatientService

LOG = logging.getLogger("archive.hl7")
SUPPORTED_EVENTS = {e.value: e for e in PatientEvent}


class FacilityDirectory:
    """MSH-4 -> organisation, through the directory's cache."""

    def __init__(self, registry: CachedRegistry) -> None:
        self._registry = registry

    def resolve(self, header: MessageHeader) -> SendingFacility:
        hd = header.sending_facility
        for candidate in dict.fromkeys(c for c in (hd.oid, hd.namespace, hd.universal_id) if c):
            found = self._registry.sending_facility(candidate)
            if found is not None:
                return found
        raise UnknownSendingFacility(
            f"sending facility {hd.encode()!r} is not registered", location="MSH^1^4"
        )


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
    refusal: HL7MessageError | None = None
    for identifier in identifiers:
        issuer = issuer_of(identifier, sender)
        if is_trusted_issuer(issuer, org):
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

    def _sender_of(
        self, raw: bytes, authorise: Callable[[str, str], None] | None = None
    ) -> tuple[AdtMessage, SendingFacility, datetime]:
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
        if authorise is not None:
            authorise(sender.org.oid, header.sender)
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
            demographics=NewDemographics(d.patient_name, name_charset, d.birth_date, d.sex, d.death_date),
            org_oid=sender.org.oid,
            sender=header.sender,
            message_control_id=header.control_id,
            received_at=received_at,
            message=message.text,
        )

    def accept(self, raw: bytes, authorise: Callable[[str, str], None] | None = None) -> PatientChangeRequest:
        """Validate, check against the index and queue durably; returns only once it is queued.

        ``authorise`` (the listener's certificate check) is called with the organisation and the
        sender (MSH-3|MSH-4) once the sending facility is resolved, before anything is recorded or
        queued; it raises to refuse. A message handled before (the same sender and MSH-10, however
        long ago) is not queued again: it was applied once, and the sender gets AA again. A message
        refused once the sender is known (and authorised) is queued to be recorded, never applied,
        before the refusal is raised.
        """
        message, sender, received_at = self._sender_of(raw, authorise)
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
