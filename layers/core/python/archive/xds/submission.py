"""ITI-42 SubmitObjectsRequest -> :class:`~archive.model.xds_submission.Submission`, validated per
ITI TF-3 4.1 (Register Document Set-b).

Checked, and every failure collected into one :class:`~archive.errors.SubmissionRejected` (the
submission is all or nothing):

- structure: exactly one SubmissionSet; every DocumentEntry and Folder a HasMember of it (with
  SubmissionSetStatus); association types known; ids symbolic or valid ``urn:uuid:`` UUIDs and unique;
- required attributes of DocumentEntry (ITI-42 column), SubmissionSet and Folder, codes with scheme
  and display name, hash (SHA-1 hex) and size;
- times in the UTC DTM format; patient ids in CX form with an ISO OID assigning authority;
- one patient: every object's patientId equals the SubmissionSet's (XDSPatientIdDoesNotMatch);
- uniqueIds unique within the message (XDSRegistryDuplicateUniqueIdInMessage).

Symbolic ids (``Document01``) are given fresh UUIDs, consistently in associations. Whether the
patient is known and trusted, the repository is the caller's, the codes are in the configured code
sets and the replaced documents exist is the registration service's business (it needs the registry).

Tolerated on input, as real senders do it: whitespace inside scheme UUID attributes (the ebRS 3.0
sample of the IHE test data has ``...-92fd- a8ffeff98427``) and the slot spelling ``authorSpeciality``.
"""

from __future__ import annotations

import re
import uuid
from collections import Counter
from datetime import datetime

from lxml import etree

from archive.errors import (
    SubmissionRejected,
    XdsDuplicateUniqueIdInMessage,
    XdsError,
    XdsPatientIdDoesNotMatch,
    XdsRegistryMetadataError,
)
from archive.model.xds import (
    Association,
    AssociationType,
    Author,
    Channel,
    Code,
    DocumentEntry,
    DocumentEntryType,
    EntryStatus,
    Folder,
    SubmissionSet,
)
from archive.model.xds_submission import Submission
from archive.xds import ns
from archive.xds.dtm import parse_dtm

_R = ns.RIM
_UUID = re.compile(r"urn:uuid:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_CX = re.compile(r"[^^&]+\^\^\^&[0-2](?:\.(?:0|[1-9][0-9]*))+&ISO")
_SHA1 = re.compile(r"[0-9a-fA-F]{40}")
_MEMBER_TYPES = {AssociationType.HAS_MEMBER}
_DOCUMENT_RELATIONS = {
    AssociationType.REPLACE,
    AssociationType.APPEND,
    AssociationType.TRANSFORM,
    AssociationType.TRANSFORM_REPLACE,
    AssociationType.SIGNS,
    AssociationType.IS_SNAPSHOT_OF,
}
_DEPRECATING = {AssociationType.REPLACE, AssociationType.TRANSFORM_REPLACE}


def _scheme(value: str | None) -> str:
    return "".join((value or "").split())


class _Reader:
    """Decodes registry objects, collecting errors instead of stopping at the first."""

    def __init__(self) -> None:
        self.errors: list[XdsError] = []
        self.ids: dict[str, str] = {}  # submitted id -> entryUUID

    def error(
        self, message: str, location: str | None, kind: type[XdsError] = XdsRegistryMetadataError
    ) -> None:
        self.errors.append(kind(message, location=location))

    # --- ids -------------------------------------------------------------------------------
    def entry_uuid(self, submitted: str | None) -> str:
        submitted = (submitted or "").strip()
        if submitted in self.ids:
            return self.ids[submitted]
        if submitted.lower().startswith("urn:uuid:"):
            if not _UUID.fullmatch(submitted):
                self.error(f"id {submitted!r} is not a valid UUID", submitted)
            value = submitted.lower()
        else:
            value = f"urn:uuid:{uuid.uuid4()}"  # symbolic id: the registry assigns the UUID
        self.ids[submitted] = value
        return value

    def label(self, entry_uuid: str) -> str:
        """The id the submitter used for an object (its symbolic id, if it had one)."""
        return next((given for given, value in self.ids.items() if value == entry_uuid), entry_uuid)

    def reference(self, submitted: str | None) -> str:
        """An id named by an association: one of this submission or an existing entryUUID."""
        submitted = (submitted or "").strip()
        if submitted in self.ids:
            return self.ids[submitted]
        if not _UUID.fullmatch(submitted):
            self.error(
                f"reference {submitted!r} is neither an object of this submission nor a UUID", submitted
            )
        return submitted.lower()

    # --- parts of one object ---------------------------------------------------------------
    @staticmethod
    def slots(element: etree._Element) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for slot in element.findall(ns.q(_R, "Slot")):
            values = [
                (v.text or "").strip() for v in slot.iterfind(f"{ns.q(_R, 'ValueList')}/{ns.q(_R, 'Value')}")
            ]
            found.setdefault((slot.get("name") or "").strip(), []).extend(v for v in values if v)
        return found

    @staticmethod
    def localized(element: etree._Element, local: str) -> str | None:
        string = element.find(f"{ns.q(_R, local)}/{ns.q(_R, 'LocalizedString')}")
        value = None if string is None else (string.get("value") or "").strip()
        return value or None

    def one_slot(self, slots: dict[str, list[str]], name: str, owner: str, *, required: bool) -> str | None:
        values = slots.get(name, [])
        if len(values) > 1:
            self.error(f"slot {name} takes one value, has {len(values)}", owner)
        if not values:
            if required:
                self.error(f"required slot {name} is missing", owner)
            return None
        return values[0]

    def time(self, slots: dict[str, list[str]], name: str, owner: str, *, required: bool) -> datetime | None:
        text = self.one_slot(slots, name, owner, required=required)
        if text is None:
            return None
        try:
            return parse_dtm(text)
        except ValueError as exc:
            self.error(f"{name}: {exc}", owner)
            return None

    def classifications(self, element: etree._Element, scheme: str) -> list[etree._Element]:
        return [
            c
            for c in element.findall(ns.q(_R, "Classification"))
            if _scheme(c.get("classificationScheme")) == scheme
        ]

    def codes(self, element: etree._Element, scheme: str, owner: str, label: str) -> list[Code]:
        found = []
        for cl in self.classifications(element, scheme):
            code = (cl.get("nodeRepresentation") or "").strip()
            coding = self.slots(cl).get("codingScheme", [])
            display = self.localized(cl, "Name")
            if not code or len(coding) != 1 or display is None:
                self.error(f"{label} needs nodeRepresentation, one codingScheme and a display name", owner)
                continue
            found.append(Code(code, coding[0], display))
        return found

    def one_code(self, element: etree._Element, scheme: str, owner: str, label: str) -> Code | None:
        codes = self.codes(element, scheme, owner, label)
        if len(codes) != 1:
            if not self.classifications(element, scheme):
                self.error(f"required {label} is missing", owner)
            elif len(codes) > 1:
                self.error(f"{label} given {len(codes)} times", owner)
            return None
        return codes[0]

    def authors(self, element: etree._Element, scheme: str) -> tuple[Author, ...]:
        authors = []
        for cl in self.classifications(element, scheme):
            s = self.slots(cl)
            authors.append(
                Author(
                    institutions=tuple(s.get("authorInstitution", [])),
                    person=next(iter(s.get("authorPerson", [])), None),
                    roles=tuple(s.get("authorRole", [])),
                    specialties=tuple(s.get("authorSpecialty", []) + s.get("authorSpeciality", [])),
                    telecommunications=tuple(s.get("authorTelecommunication", [])),
                )
            )
        return tuple(authors)

    def external_id(self, element: etree._Element, scheme: str, owner: str, label: str) -> str | None:
        values = [
            (ei.get("value") or "").strip()
            for ei in element.findall(ns.q(_R, "ExternalIdentifier"))
            if _scheme(ei.get("identificationScheme")) == scheme
        ]
        if len(values) != 1 or not values[0]:
            self.error(f"{label} must be given once", owner)
            return None
        return values[0]

    def patient_id(self, element: etree._Element, scheme: str, owner: str, label: str) -> str:
        value = self.external_id(element, scheme, owner, label)
        if value is not None and not _CX.fullmatch(value):
            self.error(f"{label} {value!r} is not a CX id^^^&OID&ISO", owner)
        return value or ""


def _classified_as(objects: list[etree._Element], package: etree._Element, node: str) -> bool:
    package_id = package.get("id")
    nested = package.findall(ns.q(_R, "Classification"))
    top = [o for o in objects if o.tag == ns.q(_R, "Classification")]
    return any(
        (c.get("classificationNode") or "").strip() == node
        and c.get("classifiedObject", package_id) == package_id
        for c in [*nested, *top]
    )


def decode_submission(body: etree._Element, *, controller: str, now: datetime) -> Submission:
    """Decode and validate the body of ITI-42 (lcm:SubmitObjectsRequest).

    ``controller`` is the OID of the submitting organisation (it controls what it registers),
    ``now`` the registration time (a Folder's lastUpdateTime). Raises SubmissionRejected.
    """
    if body.tag != ns.q(ns.LCM, "SubmitObjectsRequest"):
        raise SubmissionRejected([XdsRegistryMetadataError(f"expected SubmitObjectsRequest, got {body.tag}")])
    object_list = body.find(ns.q(_R, "RegistryObjectList"))
    if object_list is None:
        raise SubmissionRejected(
            [XdsRegistryMetadataError("SubmitObjectsRequest without RegistryObjectList")]
        )
    objects = [o for o in object_list if isinstance(o.tag, str)]
    r = _Reader()

    extrinsic = [o for o in objects if o.tag == ns.q(_R, "ExtrinsicObject")]
    packages = [o for o in objects if o.tag == ns.q(_R, "RegistryPackage")]
    set_packages = [p for p in packages if _classified_as(objects, p, ns.NODE_SUBMISSION_SET)]
    folder_packages = [p for p in packages if _classified_as(objects, p, ns.NODE_FOLDER)]
    for p in packages:
        if p not in set_packages and p not in folder_packages:
            r.error("RegistryPackage is classified neither as SubmissionSet nor as Folder", p.get("id"))
    if len(set_packages) != 1:
        raise SubmissionRejected(
            [XdsRegistryMetadataError(f"exactly one SubmissionSet is required, found {len(set_packages)}")]
        )
    submitted_ids = Counter((o.get("id") or "").strip() for o in [*extrinsic, *packages])
    for dup, count in submitted_ids.items():
        if count > 1:
            r.error(f"id {dup!r} is used by {count} objects", dup)
    # Assign every object its entryUUID first, so associations can name them.
    for o in [*extrinsic, *packages]:
        r.entry_uuid(o.get("id"))

    ss = _submission_set(r, set_packages[0], controller)
    documents = [_document(r, eo, controller) for eo in extrinsic]
    folders = [_folder(r, fp, controller, now) for fp in folder_packages]
    associations = [
        a
        for a in (_association(r, el, ss.patient_id) for el in objects if el.tag == ns.q(_R, "Association"))
        if a is not None
    ]
    _check_membership(r, ss, documents, folders, associations)
    _check_patient(r, ss, documents, folders)
    unique = Counter([ss.unique_id, *(d.unique_id for d in documents), *(f.unique_id for f in folders)])
    for unique_id, count in unique.items():
        if unique_id and count > 1:
            r.error(f"uniqueId {unique_id} appears {count} times", unique_id, XdsDuplicateUniqueIdInMessage)
    if r.errors:
        raise SubmissionRejected(r.errors)
    deprecate = tuple(a.target for a in associations if a.type in _DEPRECATING)
    return Submission(ss, tuple(documents), tuple(folders), tuple(associations), deprecate)


def _submission_set(r: _Reader, rp: etree._Element, controller: str) -> SubmissionSet:
    owner = rp.get("id") or "SubmissionSet"
    s = r.slots(rp)
    return SubmissionSet(
        entry_uuid=r.entry_uuid(rp.get("id")),
        unique_id=r.external_id(rp, ns.SS_UNIQUE_ID, owner, "XDSSubmissionSet.uniqueId") or "",
        source_id=r.external_id(rp, ns.SS_SOURCE_ID, owner, "XDSSubmissionSet.sourceId") or "",
        patient_id=r.patient_id(rp, ns.SS_PATIENT_ID, owner, "XDSSubmissionSet.patientId"),
        submission_time=r.time(s, "submissionTime", owner, required=True) or datetime.min,
        content_type=r.one_code(rp, ns.SS_CONTENT_TYPE, owner, "contentTypeCode") or Code("", "", ""),
        controller=controller,
        status=EntryStatus.APPROVED,
        title=r.localized(rp, "Name"),
        comments=r.localized(rp, "Description"),
        authors=r.authors(rp, ns.SS_AUTHOR),
        intended_recipients=tuple(s.get("intendedRecipient", [])),
    )


def _document(r: _Reader, eo: etree._Element, controller: str) -> DocumentEntry:
    owner = eo.get("id") or "ExtrinsicObject"
    s = r.slots(eo)
    object_type = _scheme(eo.get("objectType"))
    if object_type != DocumentEntryType.STABLE:
        r.error(f"objectType {object_type!r}: ITI-42 registers stable documents only", owner)
    mime_type = (eo.get("mimeType") or "").strip()
    if not mime_type:
        r.error("mimeType is required", owner)
    hash_value = r.one_slot(s, "hash", owner, required=True) or ""
    if hash_value and not _SHA1.fullmatch(hash_value):
        r.error(f"hash {hash_value!r} is not a SHA-1 in hex", owner)
    size_text = r.one_slot(s, "size", owner, required=True) or ""
    if size_text and not size_text.isdigit():
        r.error(f"size {size_text!r} is not a non-negative integer", owner)
    source_patient_id = r.one_slot(s, "sourcePatientId", owner, required=True)
    confidentiality = r.codes(eo, ns.DE_CONFIDENTIALITY_CODE, owner, "confidentialityCode")
    if not r.classifications(eo, ns.DE_CONFIDENTIALITY_CODE):
        r.error("required confidentialityCode is missing", owner)
    missing = Code("", "", "")
    return DocumentEntry(
        entry_uuid=r.entry_uuid(eo.get("id")),
        unique_id=r.external_id(eo, ns.DE_UNIQUE_ID, owner, "XDSDocumentEntry.uniqueId") or "",
        patient_id=r.patient_id(eo, ns.DE_PATIENT_ID, owner, "XDSDocumentEntry.patientId"),
        controller=controller,
        channel=Channel.REPORT,
        mime_type=mime_type,
        class_code=r.one_code(eo, ns.DE_CLASS_CODE, owner, "classCode") or missing,
        type_code=r.one_code(eo, ns.DE_TYPE_CODE, owner, "typeCode") or missing,
        format_code=r.one_code(eo, ns.DE_FORMAT_CODE, owner, "formatCode") or missing,
        confidentiality_codes=tuple(confidentiality),
        healthcare_facility_type=r.one_code(
            eo, ns.DE_HEALTHCARE_FACILITY_TYPE, owner, "healthcareFacilityTypeCode"
        )
        or missing,
        practice_setting=r.one_code(eo, ns.DE_PRACTICE_SETTING, owner, "practiceSettingCode") or missing,
        creation_time=r.time(s, "creationTime", owner, required=True) or datetime.min,
        hash=hash_value.lower(),
        size=int(size_text) if size_text.isdigit() else 0,
        repository_unique_id=r.one_slot(s, "repositoryUniqueId", owner, required=True) or "",
        language_code=r.one_slot(s, "languageCode", owner, required=True) or "",
        status=EntryStatus.APPROVED,
        object_type=DocumentEntryType.STABLE,
        title=r.localized(eo, "Name"),
        comments=r.localized(eo, "Description"),
        event_codes=tuple(r.codes(eo, ns.DE_EVENT_CODE, owner, "eventCodeList")),
        authors=r.authors(eo, ns.DE_AUTHOR),
        source_patient_id=source_patient_id,
        source_patient_info=tuple(s.get("sourcePatientInfo", [])),
        service_start_time=r.time(s, "serviceStartTime", owner, required=False),
        service_stop_time=r.time(s, "serviceStopTime", owner, required=False),
        reference_ids=tuple(s.get("urn:ihe:iti:xds:2013:referenceIdList", [])),
        legal_authenticator=r.one_slot(s, "legalAuthenticator", owner, required=False),
    )


def _folder(r: _Reader, rp: etree._Element, controller: str, now: datetime) -> Folder:
    owner = rp.get("id") or "Folder"
    codes = r.codes(rp, ns.FOLDER_CODE_LIST, owner, "codeList")
    if not r.classifications(rp, ns.FOLDER_CODE_LIST):
        r.error("required codeList is missing", owner)
    return Folder(
        entry_uuid=r.entry_uuid(rp.get("id")),
        unique_id=r.external_id(rp, ns.FOLDER_UNIQUE_ID, owner, "XDSFolder.uniqueId") or "",
        patient_id=r.patient_id(rp, ns.FOLDER_PATIENT_ID, owner, "XDSFolder.patientId"),
        last_update_time=now,
        controller=controller,
        codes=tuple(codes),
        title=r.localized(rp, "Name"),
        comments=r.localized(rp, "Description"),
    )


def _association(r: _Reader, el: etree._Element, patient_id: str) -> Association | None:
    owner = el.get("id") or "Association"
    type_text = _scheme(el.get("associationType"))
    try:
        kind = AssociationType(type_text)
    except ValueError:
        r.error(f"associationType {type_text!r} is not known", owner)
        return None
    s = r.slots(el)
    status = next(iter(s.pop("SubmissionSetStatus", [])), None)
    return Association(
        entry_uuid=r.entry_uuid(el.get("id")),
        type=kind,
        source=r.reference(el.get("sourceObject")),
        target=r.reference(el.get("targetObject")),
        patient_id=patient_id,
        submission_set_status=status,
        slots=tuple((name, tuple(values)) for name, values in s.items()),
    )


def _check_membership(
    r: _Reader,
    ss: SubmissionSet,
    documents: list[DocumentEntry],
    folders: list[Folder],
    associations: list[Association],
) -> None:
    document_ids = {d.entry_uuid for d in documents}
    folder_ids = {f.entry_uuid for f in folders}
    members = {a.target for a in associations if a.type in _MEMBER_TYPES and a.source == ss.entry_uuid}
    for missing in sorted((document_ids | folder_ids) - members):
        r.error("object is not a member (HasMember) of the SubmissionSet", r.label(missing))
    for a in associations:
        if a.type in _MEMBER_TYPES and a.source == ss.entry_uuid:
            if a.submission_set_status not in ("Original", "Reference"):
                r.error(
                    "HasMember from the SubmissionSet needs SubmissionSetStatus Original or Reference",
                    r.label(a.entry_uuid),
                )
        elif a.type in _MEMBER_TYPES and a.source in document_ids:
            r.error(
                "HasMember must come from the SubmissionSet or a Folder, not a DocumentEntry",
                r.label(a.entry_uuid),
            )
        elif a.type in _DOCUMENT_RELATIONS:
            if a.source not in document_ids:
                r.error(
                    f"{a.type.name} must come from a DocumentEntry of this submission", r.label(a.entry_uuid)
                )
            if a.target in document_ids or a.target in folder_ids or a.target == ss.entry_uuid:
                r.error(
                    f"{a.type.name} must point at a registered document, not one of this submission",
                    r.label(a.entry_uuid),
                )


def _check_patient(
    r: _Reader, ss: SubmissionSet, documents: list[DocumentEntry], folders: list[Folder]
) -> None:
    objects: list[DocumentEntry | Folder] = [*documents, *folders]
    for obj in objects:
        if obj.patient_id and ss.patient_id and obj.patient_id != ss.patient_id:
            r.error(
                f"patientId {obj.patient_id} differs from the SubmissionSet's {ss.patient_id}",
                r.label(obj.entry_uuid),
                XdsPatientIdDoesNotMatch,
            )
