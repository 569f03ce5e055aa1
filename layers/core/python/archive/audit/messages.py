"""DICOM PS3.15 A.5 audit messages as typed values, encoded to the XML of the DICOM audit message
schema (A.5.1; the schema the tests validate against is tests/schemas/dicom-audit-message.rng).

The builders below make the messages of A.5.3 (and IHE ITI TF-2 3.18/3.43, RAD TF-3 4.69) that the
archive emits; each returns an ``AuditMessage`` that ``encode`` turns into bytes. Patient
identifiers are written in HL7 CX form (``ID^^^&issuer&ISO``), as IHE requires.
"""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import IntEnum, StrEnum


@dataclass(frozen=True)
class Code:
    """A coded value (csd-code, codeSystemName, originalText)."""

    code: str
    system: str
    meaning: str


# --- A.5.3 event ids and type codes ------------------------------------------------------------
INSTANCES_ACCESSED = Code("110103", "DCM", "DICOM Instances Accessed")
INSTANCES_TRANSFERRED = Code("110104", "DCM", "DICOM Instances Transferred")
EXPORT = Code("110106", "DCM", "Export")
IMPORT = Code("110107", "DCM", "Import")
PATIENT_RECORD = Code("110110", "DCM", "Patient Record")
QUERY = Code("110112", "DCM", "Query")
SECURITY_ALERT = Code("110113", "DCM", "Security Alert")
USER_AUTHENTICATION = Code("110114", "DCM", "User Authentication")
LOGIN = Code("110122", "DCM", "Login")
NODE_AUTHENTICATION = Code("110126", "DCM", "Node Authentication")
ITI_18 = Code("ITI-18", "IHE Transactions", "Registry Stored Query")
ITI_43 = Code("ITI-43", "IHE Transactions", "Retrieve Document Set")
RAD_69 = Code("RAD-69", "IHE Transactions", "Retrieve Imaging Document Set")
ITI_42 = Code("ITI-42", "IHE Transactions", "Register Document Set-b")
# ITI TF-2 3.42.5: the submission set's classification node as ParticipantObjectIDTypeCode.
SUBMISSION_SET = Code("urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd", "IHE XDS Metadata", "submission set")
# A customer's notification that it disclosed images from its own system (archive-defined code).
DISCLOSURE_NOTIFICATION = Code("DISCLOSURE-NOTIFICATION", "NIA", "Customer disclosure notification")

SOURCE_ROLE = Code("110153", "DCM", "Source Role ID")
DESTINATION_ROLE = Code("110152", "DCM", "Destination Role ID")
APPLICATION = Code("110150", "DCM", "Application")
APPLICATION_LAUNCHER = Code("110151", "DCM", "Application Launcher")

PATIENT_NUMBER = Code("2", "RFC-3881", "Patient Number")
REPORT_NUMBER = Code("9", "RFC-3881", "Report Number")
URI = Code("12", "RFC-3881", "URI")
STUDY_INSTANCE_UID = Code("110180", "DCM", "Study Instance UID")
SOP_CLASS_UID = Code("110181", "DCM", "SOP Class UID")
NODE_ID = Code("110182", "DCM", "Node ID")


class Action(StrEnum):
    CREATE = "C"
    READ = "R"
    UPDATE = "U"
    DELETE = "D"
    EXECUTE = "E"


class Outcome(IntEnum):
    SUCCESS = 0
    MINOR_FAILURE = 4
    SERIOUS_FAILURE = 8
    MAJOR_FAILURE = 12


class NetworkAccessPointType(StrEnum):
    MACHINE_NAME = "1"
    IP_ADDRESS = "2"
    URI = "5"


@dataclass(frozen=True)
class ActiveParticipant:
    user_id: str
    is_requestor: bool
    role: Code | None = None
    network_access_point: str | None = None
    network_access_point_type: NetworkAccessPointType = NetworkAccessPointType.IP_ADDRESS
    alternative_user_id: str | None = None
    user_name: str | None = None


@dataclass(frozen=True)
class AuditSource:
    """Who reports: the archive's service (``AuditSourceID``) and the operator (enterprise site)."""

    source_id: str
    enterprise_site_id: str | None = None
    type_code: str = "4"  # application server process


@dataclass(frozen=True)
class ObjectDescription:
    """DICOM object description (A.5.1 DICOMObjectDescriptionContents): SOP classes of a study."""

    sop_classes: Mapping[str, int] = field(default_factory=dict)  # SOP Class UID -> number of instances
    instances: Mapping[str, tuple[str, ...]] = field(
        default_factory=dict
    )  # SOP Class UID -> SOP Instance UIDs
    accessions: tuple[str, ...] = ()


@dataclass(frozen=True)
class ParticipantObject:
    object_id: str
    id_type: Code
    type_code: str  # 1 person, 2 system object, 3 organisation, 4 other
    role: str | None = None  # 1 patient, 3 report, 24 query, 13 security resource, ...
    name: str | None = None
    query: bytes | None = None
    details: tuple[tuple[str, bytes], ...] = ()
    description: ObjectDescription | None = None
    lifecycle: str | None = None  # 11 disclosure, 10 export, 14 logical deletion, 15 destruction, ...


@dataclass(frozen=True)
class AuditMessage:
    event_id: Code
    action: Action
    outcome: Outcome
    participants: tuple[ActiveParticipant, ...]
    source: AuditSource
    objects: tuple[ParticipantObject, ...] = ()
    event_types: tuple[Code, ...] = ()
    outcome_description: str | None = None
    purposes_of_use: tuple[Code, ...] = ()
    at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def patient_ids(self) -> tuple[str, ...]:
        return tuple(o.object_id for o in self.objects if o.role == "1")


def _coded(parent: ET.Element, tag: str, code: Code) -> ET.Element:
    return ET.SubElement(
        parent, tag, {"csd-code": code.code, "codeSystemName": code.system, "originalText": code.meaning}
    )


def _timestamp(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def encode(message: AuditMessage) -> bytes:
    """The message as UTF-8 XML (no declaration), one line: ready for a syslog MSG or a log record."""
    root = ET.Element("AuditMessage")
    event = ET.SubElement(
        root,
        "EventIdentification",
        {
            "EventActionCode": message.action.value,
            "EventDateTime": _timestamp(message.at),
            "EventOutcomeIndicator": str(int(message.outcome)),
        },
    )
    _coded(event, "EventID", message.event_id)
    for event_type in message.event_types:
        _coded(event, "EventTypeCode", event_type)
    if message.outcome_description:
        ET.SubElement(event, "EventOutcomeDescription").text = message.outcome_description
    for purpose in message.purposes_of_use:
        _coded(event, "PurposeOfUse", purpose)
    for p in message.participants:
        attrs = {"UserID": p.user_id}
        if p.alternative_user_id:
            attrs["AlternativeUserID"] = p.alternative_user_id
        if p.user_name:
            attrs["UserName"] = p.user_name
        attrs["UserIsRequestor"] = "true" if p.is_requestor else "false"
        if p.network_access_point:
            attrs["NetworkAccessPointID"] = p.network_access_point
            attrs["NetworkAccessPointTypeCode"] = p.network_access_point_type.value
        element = ET.SubElement(root, "ActiveParticipant", attrs)
        if p.role is not None:
            _coded(element, "RoleIDCode", p.role)
    source_attrs = {"AuditSourceID": message.source.source_id}
    if message.source.enterprise_site_id:
        source_attrs["AuditEnterpriseSiteID"] = message.source.enterprise_site_id
    source = ET.SubElement(root, "AuditSourceIdentification", source_attrs)
    ET.SubElement(source, "AuditSourceTypeCode", {"csd-code": message.source.type_code})
    for o in message.objects:
        attrs = {"ParticipantObjectID": o.object_id, "ParticipantObjectTypeCode": o.type_code}
        if o.role:
            attrs["ParticipantObjectTypeCodeRole"] = o.role
        if o.lifecycle:
            attrs["ParticipantObjectDataLifeCycle"] = o.lifecycle
        element = ET.SubElement(root, "ParticipantObjectIdentification", attrs)
        _coded(element, "ParticipantObjectIDTypeCode", o.id_type)
        if o.query is not None:
            ET.SubElement(element, "ParticipantObjectQuery").text = base64.b64encode(o.query).decode("ascii")
        elif o.name is not None:
            ET.SubElement(element, "ParticipantObjectName").text = o.name
        for kind, value in o.details:
            ET.SubElement(
                element,
                "ParticipantObjectDetail",
                {"type": kind, "value": base64.b64encode(value).decode("ascii")},
            )
        if o.description is not None:
            _description(ET.SubElement(element, "ParticipantObjectDescription"), o.description)
    return ET.tostring(root, encoding="utf-8", xml_declaration=False)


def _description(parent: ET.Element, description: ObjectDescription) -> None:
    for accession in description.accessions:
        ET.SubElement(parent, "Accession", {"Number": accession})
    for sop_class, count in sorted(description.sop_classes.items()):
        element = ET.SubElement(parent, "SOPClass", {"UID": sop_class, "NumberOfInstances": str(count)})
        for uid in description.instances.get(sop_class, ()):
            ET.SubElement(element, "Instance", {"UID": uid})


# --- participant objects -----------------------------------------------------------------------


def cx(patient_key: str) -> str:
    """``<id>^^^<issuer>`` (the index's key) as HL7 CX with an ISO universal id."""
    patient_id, _, issuer = patient_key.partition("^^^")
    return f"{patient_id}^^^&{issuer}&ISO" if issuer else patient_id


def patient(patient_key: str, name: str | None = None) -> ParticipantObject:
    return ParticipantObject(cx(patient_key), PATIENT_NUMBER, "1", "1", name=name)


def study(
    study_uid: str,
    sop_classes: Mapping[str, int] | None = None,
    *,
    instances: Mapping[str, Iterable[str]] | None = None,
    accession: str | None = None,
    lifecycle: str | None = None,
) -> ParticipantObject:
    description = ObjectDescription(
        dict(sop_classes or {}),
        {k: tuple(v) for k, v in (instances or {}).items()},
        (accession,) if accession else (),
    )
    return ParticipantObject(
        study_uid, STUDY_INSTANCE_UID, "2", "3", description=description, lifecycle=lifecycle
    )


# --- participants --------------------------------------------------------------------------------


def node(ae_or_user: str, address: str | None, *, requestor: bool, role: Code | None) -> ActiveParticipant:
    return ActiveParticipant(ae_or_user, requestor, role, address)


# --- the messages the archive emits ------------------------------------------------------------------


def instances_transferred(
    *,
    source: AuditSource,
    action: Action,
    outcome: Outcome,
    sender: ActiveParticipant,
    receiver: ActiveParticipant,
    patient_key: str,
    studies: Iterable[ParticipantObject],
    requestor: ActiveParticipant | None = None,
    outcome_description: str | None = None,
    event_types: tuple[Code, ...] = (),
    purposes_of_use: tuple[Code, ...] = (),
) -> AuditMessage:
    """A.5.3.4 DICOM Instances Transferred: C (stored here), R (sent by C-MOVE/C-GET/RAD-69)."""
    participants = [sender, receiver] + ([requestor] if requestor else [])
    objects = (*studies, patient(patient_key)) if patient_key not in ("", "-") else tuple(studies)
    return AuditMessage(
        INSTANCES_TRANSFERRED,
        action,
        outcome,
        tuple(participants),
        source,
        objects,
        event_types=event_types,
        outcome_description=outcome_description,
        purposes_of_use=purposes_of_use,
    )


def query(
    *,
    source: AuditSource,
    outcome: Outcome,
    requestor: ActiveParticipant,
    responder: ActiveParticipant,
    sop_class_uid: str,
    query_bytes: bytes,
    transfer_syntax: str | None = None,
    patient_keys: Iterable[str] = (),
    outcome_description: str | None = None,
    event_types: tuple[Code, ...] = (),
    purposes_of_use: tuple[Code, ...] = (),
    others: tuple[ActiveParticipant, ...] = (),
    query_details: tuple[tuple[str, bytes], ...] = (),
) -> AuditMessage:
    """A.5.3.10 Query (C-FIND, ITI-18): the query itself, base64, and the patients it named.
    ``others``: further participants (ITI-18: the human requestor and the organisation)."""
    details: tuple[tuple[str, bytes], ...] = (
        (("TransferSyntax", transfer_syntax.encode("ascii")),) if transfer_syntax else ()
    ) + query_details
    query_object = ParticipantObject(
        sop_class_uid,
        SOP_CLASS_UID if not event_types else event_types[0],
        "2",
        "24",
        query=query_bytes,
        details=details,
    )
    return AuditMessage(
        QUERY,
        Action.EXECUTE,
        outcome,
        (requestor, responder, *others),
        source,
        (*(patient(k) for k in dict.fromkeys(patient_keys)), query_object),
        event_types=event_types,
        outcome_description=outcome_description,
        purposes_of_use=purposes_of_use,
    )


def patient_record(
    *,
    source: AuditSource,
    action: Action,
    outcome: Outcome,
    sender: ActiveParticipant,
    archive: ActiveParticipant,
    patient_keys: Iterable[str],
    message_control_id: str,
    outcome_description: str | None = None,
) -> AuditMessage:
    """A.5.3.9 Patient Record: an HL7 message changed (or was refused to change) these patients."""
    objects = tuple(
        ParticipantObject(
            cx(key), PATIENT_NUMBER, "1", "1", details=(("MSH-10", message_control_id.encode("utf-8")),)
        )
        for key in dict.fromkeys(patient_keys)
    )
    return AuditMessage(
        PATIENT_RECORD,
        action,
        outcome,
        (sender, archive),
        source,
        objects,
        outcome_description=outcome_description,
    )


def instances_accessed(
    *,
    source: AuditSource,
    action: Action,
    outcome: Outcome,
    user: ActiveParticipant,
    patient_key: str,
    studies: Iterable[ParticipantObject],
    outcome_description: str | None = None,
) -> AuditMessage:
    """A.5.3.3 DICOM Instances Accessed: with action D for rejection (IOCM) and destruction."""
    objects = (*studies, patient(patient_key)) if patient_key not in ("", "-") else tuple(studies)
    return AuditMessage(
        INSTANCES_ACCESSED,
        action,
        outcome,
        (user,),
        source,
        objects,
        outcome_description=outcome_description,
    )


def security_alert(
    *,
    source: AuditSource,
    reporter: ActiveParticipant,
    peer: ActiveParticipant,
    subject: str,
    description: str,
    event_type: Code = NODE_AUTHENTICATION,
) -> AuditMessage:
    """A.5.3.11 Security Alert (Node Authentication failure: TLS refused, certificate not trusted)."""
    alert = ParticipantObject(
        subject, URI, "2", "13", details=(("Alert Description", description.encode("utf-8")),)
    )
    return AuditMessage(
        SECURITY_ALERT,
        Action.EXECUTE,
        Outcome.MINOR_FAILURE,
        (reporter, peer),
        source,
        (alert,),
        event_types=(event_type,),
        outcome_description=description,
    )


def user_authentication(
    *,
    source: AuditSource,
    outcome: Outcome,
    user: ActiveParticipant,
    node_: ActiveParticipant,
    description: str | None = None,
) -> AuditMessage:
    """A.5.3.12 User Authentication (Login): an association or connection accepted or refused."""
    return AuditMessage(
        USER_AUTHENTICATION,
        Action.EXECUTE,
        outcome,
        (user, node_),
        source,
        event_types=(LOGIN,),
        outcome_description=description,
    )


def disclosure(
    *,
    source: AuditSource,
    event_id: Code,
    event_type: Code,
    outcome: Outcome,
    sender: ActiveParticipant,
    recipient: ActiveParticipant,
    patient_key: str,
    objects: Iterable[ParticipantObject],
    purposes_of_use: tuple[Code, ...] = (),
    person: ActiveParticipant | None = None,
    outcome_description: str | None = None,
    others: tuple[ActiveParticipant, ...] = (),
    action: Action = Action.READ,
) -> AuditMessage:
    """An XDS disclosure (ITI-43 or RAD-69 Export by the archive, R), a document set registered
    (ITI-42 Import, C) or a customer's notification of a disclosure: the sender, the recipient (and
    the person, if named, and ``others``), the patient and what was disclosed."""
    participants = (sender, recipient) + ((person,) if person else ()) + others
    return AuditMessage(
        event_id,
        action,
        outcome,
        participants,
        source,
        (patient(patient_key), *objects),
        event_types=(event_type,),
        purposes_of_use=purposes_of_use,
        outcome_description=outcome_description,
    )
