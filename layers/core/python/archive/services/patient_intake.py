"""Accepting ADT messages: decode, validate, resolve the sender and the identifiers, check the
patient state and queue the change durably. The MLLP listener acknowledges what this returns and
maps what it raises (by type) to the ACK's codes.

Sending facility (MSH-4): either the OID of a registered organisation (as MSH-4.2 with MSH-4.3
``ISO``, or as MSH-4.1), or a facility name registered for an organisation in the HL7 facility
directory (``python -m admin hl7-facility add``). A namespace-only assigning authority in
PID-3.4/MRG-1.4 (``^^^ADT1``) is translated through that facility's namespace map; an authority given
as an OID (``^^^&1.2.246.21&ISO``) is used as is. Either way the issuer must be one the organisation
trusts, exactly as for DICOM; an empty authority means the organisation's default issuer.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from archive.data.queues import PatientUpdateQueue
from archive.errors import (
    RequiredFieldMissing,
    UnknownAssigningAuthority,
    UnknownSendingFacility,
    UnsupportedMessageType,
    UnsupportedTriggerEvent,
)
from archive.hl7.message import AdtMessage, PatientIdentifier, parse_adt, require
from archive.model.identity import PatientIdentity, is_trusted_issuer
from archive.model.organisations import SendingFacility
from archive.model.patients import NewDemographics, PatientChangeRequest, PatientEvent
from archive.services.directory import CachedRegistry
from archive.services.patients import PatientService

SUPPORTED_EVENTS = {e.value: e for e in PatientEvent}


class FacilityDirectory:
    """MSH-4 -> organisation, through the directory's cache."""

    def __init__(self, registry: CachedRegistry) -> None:
        self._registry = registry

    def resolve(self, message: AdtMessage) -> SendingFacility:
        hd = message.header.sending_facility
        for candidate in dict.fromkeys(c for c in (hd.oid, hd.namespace, hd.universal_id) if c):
            found = self._registry.sending_facility(candidate)
            if found is not None:
                return found
        raise UnknownSendingFacility(
            f"sending facility {hd.encode()!r} is not registered", location="MSH^1^4"
        )


def patient_identity(
    identifiers: tuple[PatientIdentifier, ...], sender: SendingFacility, what: str, location: str
) -> PatientIdentity:
    """The first identifier whose assigning authority is a trusted issuer of the organisation."""
    if not identifiers:
        raise RequiredFieldMissing(f"{what} is required", location=location)
    org = sender.org
    refusal: UnknownAssigningAuthority | None = None
    for identifier in identifiers:
        authority = identifier.authority
        if authority.oid:
            issuer: str | None = authority.oid
        elif authority.namespace:
            issuer = sender.issuer_namespaces.get(authority.namespace)
        else:
            issuer = org.default_issuer
        if is_trusted_issuer(issuer, org):
            return PatientIdentity(identifier.id, issuer)
        refusal = refusal or UnknownAssigningAuthority(
            f"assigning authority {authority.encode()!r} of {identifier.id!r} is not a trusted issuer "
            f"of {org.oid} nor a namespace mapped to one",
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
        received_at = self._clock()
        message = parse_adt(raw)
        header = message.header
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
        event = SUPPORTED_EVENTS[header.trigger_event]
        require(header.control_id, "MSH-10 message control ID", "MSH^1^10")
        require(header.sending_facility.encode(), "MSH-4 sending facility", "MSH^1^4")
        sender = self._facilities.resolve(message)
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
        """Validate, check against the index and queue durably; returns only once it is queued."""
        request = self.request_for(raw)
        self._patients.check(request)
        self._queue.put(request.to_json(), group_id=request.group_id, deduplication_id=request.message_id)
        return request
