"""ITI-18 AdhocQueryRequest -> :class:`~archive.model.xds_query.StoredQueryRequest`.

Parameter values follow ITI TF-2a 3.18.4.1.2.3.2: a string is quoted (``'x'``, a quote inside
doubled), a number is bare, a list is parenthesised (``('a','b')``). Several Value elements of one
Slot are one list (OR). The same parameter in several Slots is allowed only where the TF allows
AND/OR semantics (event codes, confidentiality codes, folder codes); each Slot is then one AND term.

Errors (ITI TF-3 4.2.4): an unknown query id is XDSUnknownStoredQuery; a required parameter missing,
several values for a single-valued one, or two mutually exclusive ones given together is
XDSStoredQueryParamNumber; a value that cannot be decoded, or a parameter the query does not
define, is XDSRegistryError (rather than ignoring a misspelt parameter and answering a broader query
than was asked).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from lxml import etree

from archive.errors import XdsRegistryError, XdsStoredQueryParamNumber, XdsUnknownStoredQuery
from archive.model.xds import AssociationType, DocumentEntryType, EntryStatus
from archive.model.xds_query import (
    STABLE_ONLY,
    CodeKey,
    CodeList,
    FindDocuments,
    FindDocumentsByReferenceId,
    FindFolders,
    FindSubmissionSets,
    GetAll,
    GetAssociations,
    GetDocuments,
    GetDocumentsAndAssociations,
    GetFolderAndContents,
    GetFolders,
    GetFoldersForDocument,
    GetRelatedDocuments,
    GetSubmissionSetAndContents,
    GetSubmissionSets,
    ReturnType,
    StoredQuery,
    StoredQueryRequest,
    TimeRange,
)
from archive.xds import ns
from archive.xds.dtm import parse_dtm


class StoredQueryId(StrEnum):
    FIND_DOCUMENTS = "urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d"
    FIND_SUBMISSION_SETS = "urn:uuid:f26abbcb-ac74-4422-8a30-edb644bbc1a9"
    FIND_FOLDERS = "urn:uuid:958f3006-baad-4929-a4de-ff1114824431"
    GET_ALL = "urn:uuid:10b545ea-725c-446d-9b95-8aeb444eddf3"
    GET_DOCUMENTS = "urn:uuid:5c4f972b-d56b-40ac-a5fc-c8ca9b40b9d4"
    GET_FOLDERS = "urn:uuid:5737b14c-8a1a-4539-b659-e03a34a5e1e4"
    GET_ASSOCIATIONS = "urn:uuid:a7ae438b-4bc2-4642-93e9-be891f7bb155"
    GET_DOCUMENTS_AND_ASSOCIATIONS = "urn:uuid:bab9529a-4a10-40b3-a01f-f68a615d247a"
    GET_SUBMISSION_SETS = "urn:uuid:51224314-5390-4169-9b91-b1980040715a"
    GET_SUBMISSION_SET_AND_CONTENTS = "urn:uuid:e8e3cb2c-e39c-46b9-99e4-c12f57260b83"
    GET_FOLDER_AND_CONTENTS = "urn:uuid:b909a503-523d-4517-8acf-8e5834dfc4c7"
    GET_FOLDERS_FOR_DOCUMENT = "urn:uuid:10cae35a-c7f9-4cf5-b61e-fc3278ffb578"
    GET_RELATED_DOCUMENTS = "urn:uuid:d90e5407-b356-4d91-a89f-873917b4b0e6"
    FIND_DOCUMENTS_BY_REFERENCE_ID = "urn:uuid:12941a89-e02e-4be5-967c-ce4bfc8fe492"


# --- parameter kinds ------------------------------------------------------------------------
ONE = "one"  # exactly one value, one slot
MANY = "many"  # a list (OR), one slot
AND_OR = "and_or"  # a list per slot (OR), slots ANDed


@dataclass(frozen=True)
class Param:
    kind: str
    required: bool = False


_DOC_FILTER = {
    "$XDSDocumentEntryClassCode": Param(MANY),
    "$XDSDocumentEntryTypeCode": Param(MANY),
    "$XDSDocumentEntryPracticeSettingCode": Param(MANY),
    "$XDSDocumentEntryCreationTimeFrom": Param(ONE),
    "$XDSDocumentEntryCreationTimeTo": Param(ONE),
    "$XDSDocumentEntryServiceStartTimeFrom": Param(ONE),
    "$XDSDocumentEntryServiceStartTimeTo": Param(ONE),
    "$XDSDocumentEntryServiceStopTimeFrom": Param(ONE),
    "$XDSDocumentEntryServiceStopTimeTo": Param(ONE),
    "$XDSDocumentEntryHealthcareFacilityTypeCode": Param(MANY),
    "$XDSDocumentEntryEventCodeList": Param(AND_OR),
    "$XDSDocumentEntryConfidentialityCode": Param(AND_OR),
    "$XDSDocumentEntryAuthorPerson": Param(MANY),
    "$XDSDocumentEntryFormatCode": Param(MANY),
    "$XDSDocumentEntryStatus": Param(MANY, required=True),
    "$XDSDocumentEntryType": Param(MANY),
}
_HOME = {"$homeCommunityId": Param(ONE)}
_LEVEL = {"$MetadataLevel": Param(ONE)}
_CONTENTS_FILTER = {
    "$XDSDocumentEntryFormatCode": Param(MANY),
    "$XDSDocumentEntryConfidentialityCode": Param(AND_OR),
    "$XDSDocumentEntryType": Param(MANY),
}

# Every parameter of each stored query (ITI TF-2a 3.18.4.1.2.3.7.1-14).
PARAMETERS: dict[StoredQueryId, dict[str, Param]] = {
    StoredQueryId.FIND_DOCUMENTS: {
        "$XDSDocumentEntryPatientId": Param(ONE, required=True),
        **_DOC_FILTER,
        **_LEVEL,
    },
    StoredQueryId.FIND_DOCUMENTS_BY_REFERENCE_ID: {
        "$XDSDocumentEntryPatientId": Param(ONE, required=True),
        "$XDSDocumentEntryReferenceIdList": Param(MANY, required=True),
        **_DOC_FILTER,
        **_LEVEL,
    },
    StoredQueryId.FIND_SUBMISSION_SETS: {
        "$XDSSubmissionSetPatientId": Param(ONE, required=True),
        "$XDSSubmissionSetSourceId": Param(MANY),
        "$XDSSubmissionSetSubmissionTimeFrom": Param(ONE),
        "$XDSSubmissionSetSubmissionTimeTo": Param(ONE),
        "$XDSSubmissionSetAuthorPerson": Param(ONE),
        "$XDSSubmissionSetContentType": Param(MANY),
        "$XDSSubmissionSetStatus": Param(MANY, required=True),
    },
    StoredQueryId.FIND_FOLDERS: {
        "$XDSFolderPatientId": Param(ONE, required=True),
        "$XDSFolderLastUpdateTimeFrom": Param(ONE),
        "$XDSFolderLastUpdateTimeTo": Param(ONE),
        "$XDSFolderCodeList": Param(AND_OR),
        "$XDSFolderStatus": Param(MANY, required=True),
        **_LEVEL,
    },
    StoredQueryId.GET_ALL: {
        "$patientId": Param(ONE, required=True),
        "$XDSDocumentEntryStatus": Param(MANY, required=True),
        "$XDSSubmissionSetStatus": Param(MANY, required=True),
        "$XDSFolderStatus": Param(MANY, required=True),
        **_CONTENTS_FILTER,
        **_LEVEL,
    },
    StoredQueryId.GET_DOCUMENTS: {
        "$XDSDocumentEntryEntryUUID": Param(MANY),
        "$XDSDocumentEntryUniqueId": Param(MANY),
        "$XDSDocumentEntryLogicalID": Param(MANY),
        **_HOME,
        **_LEVEL,
    },
    StoredQueryId.GET_FOLDERS: {
        "$XDSFolderEntryUUID": Param(MANY),
        "$XDSFolderUniqueId": Param(MANY),
        "$XDSFolderLogicalID": Param(MANY),
        **_HOME,
        **_LEVEL,
    },
    StoredQueryId.GET_ASSOCIATIONS: {"$uuid": Param(MANY, required=True), **_HOME, **_LEVEL},
    StoredQueryId.GET_DOCUMENTS_AND_ASSOCIATIONS: {
        "$XDSDocumentEntryEntryUUID": Param(MANY),
        "$XDSDocumentEntryUniqueId": Param(MANY),
        **_HOME,
        **_LEVEL,
    },
    StoredQueryId.GET_SUBMISSION_SETS: {"$uuid": Param(MANY, required=True), **_HOME, **_LEVEL},
    StoredQueryId.GET_SUBMISSION_SET_AND_CONTENTS: {
        "$XDSSubmissionSetEntryUUID": Param(ONE),
        "$XDSSubmissionSetUniqueId": Param(ONE),
        **_CONTENTS_FILTER,
        **_HOME,
        **_LEVEL,
    },
    StoredQueryId.GET_FOLDER_AND_CONTENTS: {
        "$XDSFolderEntryUUID": Param(ONE),
        "$XDSFolderUniqueId": Param(ONE),
        **_CONTENTS_FILTER,
        **_HOME,
        **_LEVEL,
    },
    StoredQueryId.GET_FOLDERS_FOR_DOCUMENT: {
        "$XDSDocumentEntryEntryUUID": Param(ONE),
        "$XDSDocumentEntryUniqueId": Param(ONE),
        **_HOME,
        **_LEVEL,
    },
    StoredQueryId.GET_RELATED_DOCUMENTS: {
        "$XDSDocumentEntryEntryUUID": Param(ONE),
        "$XDSDocumentEntryUniqueId": Param(ONE),
        "$AssociationTypes": Param(MANY, required=True),
        "$XDSDocumentEntryType": Param(MANY),
        **_HOME,
        **_LEVEL,
    },
}

# Parameters of which exactly one must be given.
_ONE_OF: dict[StoredQueryId, tuple[str, ...]] = {
    StoredQueryId.GET_DOCUMENTS: (
        "$XDSDocumentEntryEntryUUID",
        "$XDSDocumentEntryUniqueId",
        "$XDSDocumentEntryLogicalID",
    ),
    StoredQueryId.GET_FOLDERS: ("$XDSFolderEntryUUID", "$XDSFolderUniqueId", "$XDSFolderLogicalID"),
    StoredQueryId.GET_DOCUMENTS_AND_ASSOCIATIONS: ("$XDSDocumentEntryEntryUUID", "$XDSDocumentEntryUniqueId"),
    StoredQueryId.GET_SUBMISSION_SET_AND_CONTENTS: (
        "$XDSSubmissionSetEntryUUID",
        "$XDSSubmissionSetUniqueId",
    ),
    StoredQueryId.GET_FOLDER_AND_CONTENTS: ("$XDSFolderEntryUUID", "$XDSFolderUniqueId"),
    StoredQueryId.GET_FOLDERS_FOR_DOCUMENT: ("$XDSDocumentEntryEntryUUID", "$XDSDocumentEntryUniqueId"),
    StoredQueryId.GET_RELATED_DOCUMENTS: ("$XDSDocumentEntryEntryUUID", "$XDSDocumentEntryUniqueId"),
}


# --- value syntax ---------------------------------------------------------------------------


def split_values(text: str, parameter: str) -> list[str]:
    """The items of one Value element: ``'a'`` -> [a], ``('a','b')`` -> [a, b], ``2004`` -> [2004]."""
    value = text.strip()
    if value.startswith("("):
        if not value.endswith(")"):
            raise XdsRegistryError(f"unbalanced parentheses in {value!r}", location=parameter)
        value = value[1:-1]
    items: list[str] = []
    i, n = 0, len(value)
    while i < n:
        while i < n and value[i] in " \t\r\n":
            i += 1
        if i >= n:
            break
        if value[i] == "'":
            i += 1
            chars: list[str] = []
            while True:
                if i >= n:
                    raise XdsRegistryError(f"unterminated quote in {text.strip()!r}", location=parameter)
                if value[i] == "'":
                    if i + 1 < n and value[i + 1] == "'":
                        chars.append("'")
                        i += 2
                        continue
                    i += 1
                    break
                chars.append(value[i])
                i += 1
            items.append("".join(chars))
        else:
            start = i
            while i < n and value[i] != ",":
                i += 1
            token = value[start:i].strip()
            if not token or "'" in token:
                raise XdsRegistryError(f"malformed value {text.strip()!r}", location=parameter)
            items.append(token)
        while i < n and value[i] in " \t\r\n":
            i += 1
        if i < n:
            if value[i] != ",":
                raise XdsRegistryError(f"malformed list {text.strip()!r}", location=parameter)
            i += 1
    return items


def _code(text: str, parameter: str) -> CodeKey:
    parts = text.split("^")
    if len(parts) != 3 or not parts[0] or not parts[2]:
        raise XdsRegistryError(f"code {text!r} is not code^^scheme", location=parameter)
    return CodeKey(parts[0], parts[2])


def _time(text: str, parameter: str) -> datetime:
    try:
        return parse_dtm(text)
    except ValueError as exc:
        raise XdsRegistryError(str(exc), location=parameter) from exc


def _enum(kind: Any, text: str, parameter: str) -> Any:
    try:
        return kind(text)
    except ValueError as exc:
        raise XdsRegistryError(f"{text!r} is not a valid value", location=parameter) from exc


class _Slots:
    """The request's slots, decoded lazily per parameter with the query's rules."""

    def __init__(self, raw: dict[str, list[list[str]]]) -> None:
        self.raw = raw

    def given(self, name: str) -> bool:
        return name in self.raw

    def groups(self, name: str) -> list[list[str]]:
        return self.raw.get(name, [])

    def one(self, name: str) -> str | None:
        groups = self.raw.get(name)
        return groups[0][0] if groups else None

    def many(self, name: str) -> tuple[str, ...]:
        groups = self.raw.get(name)
        return tuple(groups[0]) if groups else ()

    def codes(self, name: str) -> CodeList:
        return tuple(frozenset(_code(v, name) for v in group) for group in self.groups(name))

    def time(self, name: str) -> datetime | None:
        value = self.one(name)
        return None if value is None else _time(value, name)

    def range(self, prefix: str) -> TimeRange:
        return TimeRange(self.time(prefix + "From"), self.time(prefix + "To"))

    def statuses(self, name: str) -> frozenset[EntryStatus]:
        return frozenset(_enum(EntryStatus, v, name) for v in self.many(name))

    def entry_types(self) -> frozenset[DocumentEntryType]:
        name = "$XDSDocumentEntryType"
        if not self.given(name):
            return STABLE_ONLY
        return frozenset(_enum(DocumentEntryType, v, name) for v in self.many(name))


def _read_slots(query: etree._Element, spec: dict[str, Param]) -> dict[str, list[list[str]]]:
    raw: dict[str, list[list[str]]] = {}
    for slot in query.findall(ns.q(ns.RIM, "Slot")):
        name = (slot.get("name") or "").strip()
        param = spec.get(name)
        if param is None:
            raise XdsRegistryError(f"parameter {name!r} is not defined for this stored query", location=name)
        values: list[str] = []
        for value in slot.iterfind(f"{ns.q(ns.RIM, 'ValueList')}/{ns.q(ns.RIM, 'Value')}"):
            values.extend(split_values(value.text or "", name))
        if not values:
            raise XdsStoredQueryParamNumber(f"parameter {name} has no value", location=name)
        if name in raw and param.kind != AND_OR:
            raise XdsStoredQueryParamNumber(f"parameter {name} given in more than one Slot", location=name)
        if param.kind == ONE and len(values) > 1:
            raise XdsStoredQueryParamNumber(f"parameter {name} takes one value", location=name)
        raw.setdefault(name, []).append(values)
    for name, param in spec.items():
        if param.required and name not in raw:
            raise XdsStoredQueryParamNumber(f"required parameter {name} is missing", location=name)
    return raw


def _exactly_one(slots: _Slots, names: tuple[str, ...]) -> None:
    given = [n for n in names if slots.given(n)]
    if len(given) != 1:
        raise XdsStoredQueryParamNumber(
            f"exactly one of {', '.join(names)} is required, got {len(given)}",
            location=",".join(given) or None,
        )


# --- one builder per stored query -----------------------------------------------------------


def _find_documents_args(s: _Slots) -> dict[str, Any]:
    p = "$XDSDocumentEntry"
    return {
        "patient_id": s.one(p + "PatientId"),
        "statuses": s.statuses(p + "Status"),
        "class_codes": s.codes(p + "ClassCode"),
        "type_codes": s.codes(p + "TypeCode"),
        "practice_setting_codes": s.codes(p + "PracticeSettingCode"),
        "healthcare_facility_type_codes": s.codes(p + "HealthcareFacilityTypeCode"),
        "format_codes": s.codes(p + "FormatCode"),
        "event_codes": s.codes(p + "EventCodeList"),
        "confidentiality_codes": s.codes(p + "ConfidentialityCode"),
        "creation_time": s.range(p + "CreationTime"),
        "service_start_time": s.range(p + "ServiceStartTime"),
        "service_stop_time": s.range(p + "ServiceStopTime"),
        "author_persons": s.many(p + "AuthorPerson"),
        "entry_types": s.entry_types(),
    }


def _contents_args(s: _Slots) -> dict[str, Any]:
    return {
        "format_codes": s.codes("$XDSDocumentEntryFormatCode"),
        "confidentiality_codes": s.codes("$XDSDocumentEntryConfidentialityCode"),
        "entry_types": s.entry_types(),
    }


_BUILDERS: dict[StoredQueryId, Callable[[_Slots], StoredQuery]] = {
    StoredQueryId.FIND_DOCUMENTS: lambda s: FindDocuments(**_find_documents_args(s)),
    StoredQueryId.FIND_DOCUMENTS_BY_REFERENCE_ID: lambda s: FindDocumentsByReferenceId(
        **_find_documents_args(s), reference_ids=s.many("$XDSDocumentEntryReferenceIdList")
    ),
    StoredQueryId.FIND_SUBMISSION_SETS: lambda s: FindSubmissionSets(
        patient_id=s.one("$XDSSubmissionSetPatientId") or "",
        statuses=s.statuses("$XDSSubmissionSetStatus"),
        source_ids=s.many("$XDSSubmissionSetSourceId"),
        submission_time=s.range("$XDSSubmissionSetSubmissionTime"),
        author_person=s.one("$XDSSubmissionSetAuthorPerson"),
        content_type_codes=s.codes("$XDSSubmissionSetContentType"),
    ),
    StoredQueryId.FIND_FOLDERS: lambda s: FindFolders(
        patient_id=s.one("$XDSFolderPatientId") or "",
        statuses=s.statuses("$XDSFolderStatus"),
        last_update_time=s.range("$XDSFolderLastUpdateTime"),
        codes=s.codes("$XDSFolderCodeList"),
    ),
    StoredQueryId.GET_ALL: lambda s: GetAll(
        patient_id=s.one("$patientId") or "",
        document_statuses=s.statuses("$XDSDocumentEntryStatus"),
        submission_set_statuses=s.statuses("$XDSSubmissionSetStatus"),
        folder_statuses=s.statuses("$XDSFolderStatus"),
        **_contents_args(s),
    ),
    StoredQueryId.GET_DOCUMENTS: lambda s: GetDocuments(
        uuids=s.many("$XDSDocumentEntryEntryUUID"),
        unique_ids=s.many("$XDSDocumentEntryUniqueId"),
        logical_ids=s.many("$XDSDocumentEntryLogicalID"),
    ),
    StoredQueryId.GET_FOLDERS: lambda s: GetFolders(
        uuids=s.many("$XDSFolderEntryUUID"),
        unique_ids=s.many("$XDSFolderUniqueId"),
        logical_ids=s.many("$XDSFolderLogicalID"),
    ),
    StoredQueryId.GET_ASSOCIATIONS: lambda s: GetAssociations(uuids=s.many("$uuid")),
    StoredQueryId.GET_DOCUMENTS_AND_ASSOCIATIONS: lambda s: GetDocumentsAndAssociations(
        uuids=s.many("$XDSDocumentEntryEntryUUID"), unique_ids=s.many("$XDSDocumentEntryUniqueId")
    ),
    StoredQueryId.GET_SUBMISSION_SETS: lambda s: GetSubmissionSets(uuids=s.many("$uuid")),
    StoredQueryId.GET_SUBMISSION_SET_AND_CONTENTS: lambda s: GetSubmissionSetAndContents(
        uuid=s.one("$XDSSubmissionSetEntryUUID"),
        unique_id=s.one("$XDSSubmissionSetUniqueId"),
        **_contents_args(s),
    ),
    StoredQueryId.GET_FOLDER_AND_CONTENTS: lambda s: GetFolderAndContents(
        uuid=s.one("$XDSFolderEntryUUID"), unique_id=s.one("$XDSFolderUniqueId"), **_contents_args(s)
    ),
    StoredQueryId.GET_FOLDERS_FOR_DOCUMENT: lambda s: GetFoldersForDocument(
        uuid=s.one("$XDSDocumentEntryEntryUUID"), unique_id=s.one("$XDSDocumentEntryUniqueId")
    ),
    StoredQueryId.GET_RELATED_DOCUMENTS: lambda s: GetRelatedDocuments(
        association_types=frozenset(
            _enum(AssociationType, v, "$AssociationTypes") for v in s.many("$AssociationTypes")
        ),
        uuid=s.one("$XDSDocumentEntryEntryUUID"),
        unique_id=s.one("$XDSDocumentEntryUniqueId"),
        entry_types=s.entry_types(),
    ),
}


def decode_query_request(body: etree._Element) -> StoredQueryRequest:
    """Decode the SOAP body of an ITI-18 request (a query:AdhocQueryRequest element)."""
    if body.tag != ns.q(ns.QUERY, "AdhocQueryRequest"):
        raise XdsRegistryError(f"expected AdhocQueryRequest, got {body.tag}")
    option = body.find(ns.q(ns.QUERY, "ResponseOption"))
    query = body.find(ns.q(ns.RIM, "AdhocQuery"))
    if option is None or query is None:
        raise XdsRegistryError("AdhocQueryRequest needs ResponseOption and AdhocQuery")
    return_type = (option.get("returnType") or "").strip()
    if return_type not in {r.value for r in ReturnType}:
        raise XdsRegistryError(
            f"returnType {return_type!r} is not LeafClass or ObjectRef", location="returnType"
        )
    composed = (option.get("returnComposedObjects") or "false").strip().lower() in {"true", "1"}
    try:
        query_id = StoredQueryId((query.get("id") or "").strip().lower())
    except ValueError:
        raise XdsUnknownStoredQuery(
            f"unknown stored query {query.get('id')!r}", location=query.get("id")
        ) from None
    spec = PARAMETERS[query_id]
    slots = _Slots(_read_slots(query, spec))
    if query_id in _ONE_OF:
        _exactly_one(slots, _ONE_OF[query_id])
    level_text = slots.one("$MetadataLevel")
    if level_text not in (None, "1", "2"):
        raise XdsRegistryError(f"$MetadataLevel {level_text!r} is not 1 or 2", location="$MetadataLevel")
    home = slots.one("$homeCommunityId") or (query.get("home") or "").strip() or None
    return StoredQueryRequest(
        query=_BUILDERS[query_id](slots),
        return_type=ReturnType(return_type),
        return_composed_objects=composed,
        home_community_id=home,
        metadata_level=int(level_text or 1),
    )
