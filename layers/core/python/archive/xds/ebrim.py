"""Model values -> ebRIM 3.0 registry objects as ITI TF-3 4.2.3 lays them out.

DocumentEntry -> ExtrinsicObject, SubmissionSet and Folder -> RegistryPackage (with the classifying
node), Association -> Association. Codes are Classifications (nodeRepresentation = code, Slot
codingScheme, Name = display name), identifiers are ExternalIdentifiers, times are DTM in UTC.
Child order follows the schema: Slot*, Name, Description, VersionInfo, Classification*,
ExternalIdentifier*.

Ids of the composed objects (Classification, ExternalIdentifier) are name-based UUIDs of the owning
object, so the same object is encoded the same way in every answer.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence

from lxml import etree

from archive.model.xds import Association, Author, Code, DocumentEntry, Folder, SubmissionSet
from archive.xds import ns
from archive.xds.dtm import format_dtm

_R = ns.RIM


def _el(parent: etree._Element, local: str, **attrs: str) -> etree._Element:
    return etree.SubElement(parent, ns.q(_R, local), attrs)


def slot(parent: etree._Element, name: str, values: Iterable[str]) -> None:
    values = [v for v in values if v is not None and v != ""]
    if not values:
        return
    values_el = _el(_el(parent, "Slot", name=name), "ValueList")
    for value in values:
        _el(values_el, "Value").text = value


def _localized(parent: etree._Element, local: str, text: str | None) -> None:
    if text:
        _el(_el(parent, local), "LocalizedString", value=text)


def _composed_id(owner: str, *parts: object) -> str:
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, '/'.join([owner, *map(str, parts)]))}"


def _code(parent: etree._Element, owner: str, scheme: str, code: Code, index: int) -> None:
    cl = _el(
        parent,
        "Classification",
        id=_composed_id(owner, scheme, index),
        classificationScheme=scheme,
        classifiedObject=owner,
        nodeRepresentation=code.code,
    )
    slot(cl, "codingScheme", [code.scheme])
    _localized(cl, "Name", code.display)


def _author(parent: etree._Element, owner: str, scheme: str, author: Author, index: int) -> None:
    cl = _el(
        parent,
        "Classification",
        id=_composed_id(owner, scheme, index),
        classificationScheme=scheme,
        classifiedObject=owner,
        nodeRepresentation="",
    )
    slot(cl, "authorPerson", [author.person] if author.person else [])
    slot(cl, "authorInstitution", author.institutions)
    slot(cl, "authorRole", author.roles)
    slot(cl, "authorSpecialty", author.specialties)
    slot(cl, "authorTelecommunication", author.telecommunications)


def _node(parent: etree._Element, owner: str, node: str) -> None:
    _el(
        parent,
        "Classification",
        id=_composed_id(owner, node),
        classifiedObject=owner,
        classificationNode=node,
    )


def _external_id(parent: etree._Element, owner: str, scheme: str, value: str) -> None:
    ei = _el(
        parent,
        "ExternalIdentifier",
        id=_composed_id(owner, scheme),
        registryObject=owner,
        identificationScheme=scheme,
        value=value,
    )
    _localized(ei, "Name", ns.EXTERNAL_ID_NAMES.get(scheme))


def _identity(element: etree._Element, entry_uuid: str, status: str, home: str | None) -> None:
    element.set("id", entry_uuid)
    element.set("status", status)
    if home:
        element.set("home", home)


def document_entry(parent: etree._Element, entry: DocumentEntry, *, composed: bool = True) -> etree._Element:
    """An ExtrinsicObject for one DocumentEntry, appended to ``parent``."""
    eo = _el(parent, "ExtrinsicObject", mimeType=entry.mime_type, objectType=str(entry.object_type))
    _identity(eo, entry.entry_uuid, str(entry.status), entry.home_community_id)
    eo.set("lid", entry.logical_id or entry.entry_uuid)
    slot(eo, "creationTime", [format_dtm(entry.creation_time)])
    slot(eo, "hash", [entry.hash])
    slot(eo, "languageCode", [entry.language_code])
    if entry.legal_authenticator:
        slot(eo, "legalAuthenticator", [entry.legal_authenticator])
    slot(eo, "repositoryUniqueId", [entry.repository_unique_id])
    if entry.service_start_time is not None:
        slot(eo, "serviceStartTime", [format_dtm(entry.service_start_time)])
    if entry.service_stop_time is not None:
        slot(eo, "serviceStopTime", [format_dtm(entry.service_stop_time)])
    slot(eo, "size", [str(entry.size)])
    slot(eo, "sourcePatientId", [entry.source_patient_id] if entry.source_patient_id else [])
    slot(eo, "sourcePatientInfo", entry.source_patient_info)
    slot(eo, "urn:ihe:iti:xds:2013:referenceIdList", entry.reference_ids)
    _localized(eo, "Name", entry.title)
    _localized(eo, "Description", entry.comments)
    _el(eo, "VersionInfo", versionName=str(entry.version))
    if not composed:
        return eo
    owner = entry.entry_uuid
    for i, author in enumerate(entry.authors):
        _author(eo, owner, ns.DE_AUTHOR, author, i)
    _code(eo, owner, ns.DE_CLASS_CODE, entry.class_code, 0)
    for i, code in enumerate(entry.confidentiality_codes):
        _code(eo, owner, ns.DE_CONFIDENTIALITY_CODE, code, i)
    for i, code in enumerate(entry.event_codes):
        _code(eo, owner, ns.DE_EVENT_CODE, code, i)
    _code(eo, owner, ns.DE_FORMAT_CODE, entry.format_code, 0)
    _code(eo, owner, ns.DE_HEALTHCARE_FACILITY_TYPE, entry.healthcare_facility_type, 0)
    _code(eo, owner, ns.DE_PRACTICE_SETTING, entry.practice_setting, 0)
    _code(eo, owner, ns.DE_TYPE_CODE, entry.type_code, 0)
    _external_id(eo, owner, ns.DE_PATIENT_ID, entry.patient_id)
    _external_id(eo, owner, ns.DE_UNIQUE_ID, entry.unique_id)
    return eo


def submission_set(parent: etree._Element, ss: SubmissionSet, *, composed: bool = True) -> etree._Element:
    """A RegistryPackage classified as XDSSubmissionSet."""
    rp = _el(parent, "RegistryPackage")
    _identity(rp, ss.entry_uuid, str(ss.status), ss.home_community_id)
    slot(rp, "submissionTime", [format_dtm(ss.submission_time)])
    slot(rp, "intendedRecipient", ss.intended_recipients)
    _localized(rp, "Name", ss.title)
    _localized(rp, "Description", ss.comments)
    if not composed:
        return rp
    owner = ss.entry_uuid
    _node(rp, owner, ns.NODE_SUBMISSION_SET)
    for i, author in enumerate(ss.authors):
        _author(rp, owner, ns.SS_AUTHOR, author, i)
    _code(rp, owner, ns.SS_CONTENT_TYPE, ss.content_type, 0)
    _external_id(rp, owner, ns.SS_UNIQUE_ID, ss.unique_id)
    _external_id(rp, owner, ns.SS_SOURCE_ID, ss.source_id)
    _external_id(rp, owner, ns.SS_PATIENT_ID, ss.patient_id)
    return rp


def folder(parent: etree._Element, f: Folder, *, composed: bool = True) -> etree._Element:
    """A RegistryPackage classified as XDSFolder."""
    rp = _el(parent, "RegistryPackage")
    _identity(rp, f.entry_uuid, str(f.status), f.home_community_id)
    slot(rp, "lastUpdateTime", [format_dtm(f.last_update_time)])
    _localized(rp, "Name", f.title)
    _localized(rp, "Description", f.comments)
    if not composed:
        return rp
    owner = f.entry_uuid
    _node(rp, owner, ns.NODE_FOLDER)
    for i, code in enumerate(f.codes):
        _code(rp, owner, ns.FOLDER_CODE_LIST, code, i)
    _external_id(rp, owner, ns.FOLDER_UNIQUE_ID, f.unique_id)
    _external_id(rp, owner, ns.FOLDER_PATIENT_ID, f.patient_id)
    return rp


def association(parent: etree._Element, a: Association) -> etree._Element:
    el = _el(
        parent,
        "Association",
        id=a.entry_uuid,
        associationType=str(a.type),
        sourceObject=a.source,
        targetObject=a.target,
        status=str(a.status),
    )
    if a.submission_set_status:
        slot(el, "SubmissionSetStatus", [a.submission_set_status])
    for name, values in a.slots:
        if name != "SubmissionSetStatus":
            slot(el, name, values)
    return el


def registry_object_list(
    parent: etree._Element,
    *,
    documents: Sequence[DocumentEntry] = (),
    submission_sets: Sequence[SubmissionSet] = (),
    folders: Sequence[Folder] = (),
    associations: Sequence[Association] = (),
    composed: bool = True,
) -> etree._Element:
    """rim:RegistryObjectList with every object as LeafClass."""
    objects = _el(parent, "RegistryObjectList")
    for entry in documents:
        document_entry(objects, entry, composed=composed)
    for ss in submission_sets:
        submission_set(objects, ss, composed=composed)
    for f in folders:
        folder(objects, f, composed=composed)
    for a in associations:
        association(objects, a)
    return objects


def object_ref_list(parent: etree._Element, ids: Iterable[str]) -> etree._Element:
    """rim:RegistryObjectList of ObjectRefs (returnType ObjectRef)."""
    objects = _el(parent, "RegistryObjectList")
    for object_id in ids:
        _el(objects, "ObjectRef", id=object_id)
    return objects
