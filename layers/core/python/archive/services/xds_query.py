"""ITI-18 Registry Stored Query: which registry lookups each stored query makes, then the filtering
and composition of what they return (ITI TF-2a 3.18.4.1.2.3.7).

Every lookup is a method of :class:`XdsRegistryReader` (the read side of the registry contract:
key, BatchGet or index Query, never a scan). The filtering and composition are pure functions over
model values, separate from the lookups, so each rule is testable on its own.

Rules the registry enforces on every answer: all objects belong to one patient
(XDSResultNotSinglePatient), and a LeafClass answer holds at most ``max_leaf_class`` objects
(XDSTooManyResults; ObjectRef answers are not limited, a consumer can page with GetDocuments).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Protocol

from archive.errors import ResourceIdMismatch, XdsResultNotSinglePatient, XdsTooManyResults
from archive.model.xds import (
    Association,
    AssociationType,
    Author,
    Code,
    DocumentEntry,
    DocumentEntryType,
    EntryStatus,
    Folder,
    SubmissionSet,
)
from archive.model.xds_query import (
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
    QueryResult,
    ReturnType,
    StoredQuery,
    StoredQueryRequest,
    TimeRange,
)


class XdsRegistryReader(Protocol):
    """The read methods of the XDS registry (``archive.data.xds_registry.XdsRegistry``)."""

    def documents_by_patient(
        self, patient_id: str, statuses: Collection[EntryStatus]
    ) -> list[DocumentEntry]: ...
    def documents_by_uuid(self, uuids: Collection[str]) -> list[DocumentEntry]: ...
    def documents_by_unique_id(self, unique_ids: Collection[str]) -> list[DocumentEntry]: ...
    def documents_by_reference_id(
        self, patient_id: str, reference_ids: Collection[str]
    ) -> list[DocumentEntry]: ...
    def submission_sets_by_patient(
        self, patient_id: str, statuses: Collection[EntryStatus]
    ) -> list[SubmissionSet]: ...
    def submission_sets_by_uuid(self, uuids: Collection[str]) -> list[SubmissionSet]: ...
    def submission_sets_by_unique_id(self, unique_ids: Collection[str]) -> list[SubmissionSet]: ...
    def folders_by_patient(self, patient_id: str, statuses: Collection[EntryStatus]) -> list[Folder]: ...
    def folders_by_uuid(self, uuids: Collection[str]) -> list[Folder]: ...
    def folders_by_unique_id(self, unique_ids: Collection[str]) -> list[Folder]: ...
    def associations_of(self, uuids: Collection[str]) -> list[Association]: ...


@dataclass(frozen=True)
class QueryPolicy:
    """Configured limits of the stored query service."""

    max_leaf_class: int = 1000


# --- matching (pure) --------------------------------------------------------------------------


def codes_match(codes: Iterable[Code], condition: CodeList) -> bool:
    """AND over the groups, OR within a group; an empty condition matches everything."""
    have = {CodeKey(c.code, c.scheme) for c in codes}
    return all(have & group for group in condition)


def in_range(moment: datetime | None, window: TimeRange) -> bool:
    """start <= moment < end; an object without the time matches only an unbounded window."""
    if not window.bounded:
        return True
    if moment is None:
        return False
    if window.start is not None and moment < window.start:
        return False
    return window.end is None or moment < window.end


@cache
def _like(pattern: str) -> re.Pattern[str]:
    wildcards = {"%": ".*", "_": "."}
    return re.compile(
        "".join(wildcards.get(ch) or re.escape(ch) for ch in pattern), re.IGNORECASE | re.DOTALL
    )


def authors_match(authors: Iterable[Author], patterns: Sequence[str]) -> bool:
    """Any authorPerson matches any SQL LIKE pattern (``%`` any run, ``_`` one character;
    case-insensitive). No patterns: matches."""
    if not patterns:
        return True
    people = [a.person for a in authors if a.person]
    return any(_like(p).fullmatch(person) for p in patterns for person in people)


def document_matches(entry: DocumentEntry, q: FindDocuments) -> bool:
    return (
        entry.patient_id == q.patient_id
        and entry.status in q.statuses
        and entry.object_type in q.entry_types
        and codes_match([entry.class_code], q.class_codes)
        and codes_match([entry.type_code], q.type_codes)
        and codes_match([entry.practice_setting], q.practice_setting_codes)
        and codes_match([entry.healthcare_facility_type], q.healthcare_facility_type_codes)
        and codes_match([entry.format_code], q.format_codes)
        and codes_match(entry.event_codes, q.event_codes)
        and codes_match(entry.confidentiality_codes, q.confidentiality_codes)
        and in_range(entry.creation_time, q.creation_time)
        and in_range(entry.service_start_time, q.service_start_time)
        and in_range(entry.service_stop_time, q.service_stop_time)
        and authors_match(entry.authors, q.author_persons)
        and (
            not isinstance(q, FindDocumentsByReferenceId)
            or bool(set(entry.reference_ids) & set(q.reference_ids))
        )
    )


def filter_documents(entries: Iterable[DocumentEntry], q: FindDocuments) -> list[DocumentEntry]:
    return [e for e in entries if document_matches(e, q)]


def content_filter(
    entries: Iterable[DocumentEntry],
    *,
    format_codes: CodeList,
    confidentiality_codes: CodeList,
    entry_types: Collection[DocumentEntryType],
) -> list[DocumentEntry]:
    """The document filter of GetAll, GetSubmissionSetAndContents and GetFolderAndContents."""
    return [
        e
        for e in entries
        if e.object_type in entry_types
        and codes_match([e.format_code], format_codes)
        and codes_match(e.confidentiality_codes, confidentiality_codes)
    ]


def filter_submission_sets(sets: Iterable[SubmissionSet], q: FindSubmissionSets) -> list[SubmissionSet]:
    return [
        s
        for s in sets
        if s.patient_id == q.patient_id
        and s.status in q.statuses
        and (not q.source_ids or s.source_id in q.source_ids)
        and in_range(s.submission_time, q.submission_time)
        and authors_match(s.authors, [q.author_person] if q.author_person else [])
        and codes_match([s.content_type], q.content_type_codes)
    ]


def filter_folders(folders: Iterable[Folder], q: FindFolders) -> list[Folder]:
    return [
        f
        for f in folders
        if f.patient_id == q.patient_id
        and f.status in q.statuses
        and in_range(f.last_update_time, q.last_update_time)
        and codes_match(f.codes, q.codes)
    ]


# --- composition (pure) -----------------------------------------------------------------------


def members(container: str, associations: Iterable[Association]) -> list[Association]:
    """HasMember associations whose source is ``container``."""
    return [a for a in associations if a.type is AssociationType.HAS_MEMBER and a.source == container]


def submission_set_contents(
    ss: SubmissionSet,
    associations: Sequence[Association],
    documents: Iterable[DocumentEntry],
    folders: Iterable[Folder],
) -> QueryResult:
    """GetSubmissionSetAndContents: the set, its member documents (already filtered) and folders,
    and the HasMember associations that join them: the set's own, and the folder-document ones the
    set holds as members. An association to a document that was filtered out is left out too."""
    docs = {d.entry_uuid: d for d in documents}
    kept_folders = {f.entry_uuid: f for f in folders}
    own = members(ss.entry_uuid, associations)
    member_ids = {a.target for a in own}
    by_id = {a.entry_uuid: a for a in associations}
    kept: list[Association] = []
    for a in own:
        if a.target in docs or a.target in kept_folders:
            kept.append(a)
        elif a.target in by_id:
            inner = by_id[a.target]  # the set holds a folder-document association as a member
            if inner.source in kept_folders and inner.target in docs:
                kept.extend([a, inner])
    return QueryResult(
        documents=tuple(d for d in docs.values() if d.entry_uuid in member_ids),
        submission_sets=(ss,),
        folders=tuple(f for f in kept_folders.values() if f.entry_uuid in member_ids),
        associations=tuple(dict.fromkeys(kept)),
    )


def folder_contents(
    folder: Folder, associations: Sequence[Association], documents: Iterable[DocumentEntry]
) -> QueryResult:
    """GetFolderAndContents: the folder, its member documents (already filtered), their HasMember."""
    docs = {d.entry_uuid: d for d in documents}
    kept = [a for a in members(folder.entry_uuid, associations) if a.target in docs]
    member_ids = {a.target for a in kept}
    return QueryResult(
        documents=tuple(d for d in docs.values() if d.entry_uuid in member_ids),
        folders=(folder,),
        associations=tuple(kept),
    )


def associations_among(associations: Iterable[Association], ids: Collection[str]) -> list[Association]:
    """Associations whose both ends are among ``ids`` (or are such associations themselves, as when
    a submission set holds a folder-document association), without duplicates."""
    found = {a.entry_uuid: a for a in associations if a.source in ids and a.target in ids}
    for a in associations:
        if a.source in ids and a.target in found:
            found[a.entry_uuid] = a
    return list(found.values())


def related(
    document: DocumentEntry, associations: Iterable[Association], types: Collection[AssociationType]
) -> list[Association]:
    """GetRelatedDocuments: associations of the requested types with the document at either end."""
    return [
        a
        for a in associations
        if a.type in types and document.entry_uuid in (a.source, a.target) and a.source != a.target
    ]


def check_single_patient(result: QueryResult) -> None:
    patients = {
        *(d.patient_id for d in result.documents),
        *(s.patient_id for s in result.submission_sets),
        *(f.patient_id for f in result.folders),
    }
    if len(patients) > 1:
        raise XdsResultNotSinglePatient(f"the result spans {len(patients)} patients")


def _patient_key(cx: str) -> tuple[str, str]:
    """(ID, assigning authority OID) of a CX: ``id^^^&OID&ISO`` and ``id^^^NS&OID&ISO`` are one patient."""
    parts = cx.strip().split("^")
    authority = parts[3].split("&") if len(parts) > 3 else []
    return parts[0], authority[1] if len(authority) > 1 else (authority[0] if authority else "")


def same_patient(a: str, b: str) -> bool:
    return _patient_key(a) == _patient_key(b)


def queried_patient(query: StoredQuery) -> str | None:
    """The patient a query names in its parameters (Find*, GetAll); None for queries by identifier."""
    if isinstance(query, FindDocuments | FindSubmissionSets | FindFolders | GetAll):
        return query.patient_id
    return None


def check_resource_id(resource_id: str | None, query: StoredQuery, result: QueryResult | None = None) -> None:
    """The XUA resource-id must be the patient asked about: before any lookup for a query by patient
    (nothing is read for another patient), and for everything found by a query by identifier."""
    if resource_id is None:
        raise ResourceIdMismatch("the assertion names no patient (resource-id)")
    patient = queried_patient(query)
    if patient is not None and not same_patient(patient, resource_id):
        raise ResourceIdMismatch("the query is for another patient than the assertion's resource-id")
    if result is not None:
        found = {
            *(d.patient_id for d in result.documents),
            *(s.patient_id for s in result.submission_sets),
            *(f.patient_id for f in result.folders),
        }
        if any(not same_patient(p, resource_id) for p in found):
            raise ResourceIdMismatch("the result belongs to another patient than the assertion's resource-id")


def check_size(result: QueryResult, return_type: ReturnType, policy: QueryPolicy) -> None:
    if return_type is ReturnType.LEAF_CLASS and len(result) > policy.max_leaf_class:
        raise XdsTooManyResults(
            f"{len(result)} objects exceed the LeafClass limit of {policy.max_leaf_class}; ask for ObjectRef"
        )


# --- lookups, one function per stored query ---------------------------------------------------


def _document(reg: XdsRegistryReader, uuid: str | None, unique_id: str | None) -> DocumentEntry | None:
    found = reg.documents_by_uuid([uuid]) if uuid else reg.documents_by_unique_id([unique_id or ""])
    return found[0] if found else None


def _find_documents(q: FindDocuments, reg: XdsRegistryReader) -> QueryResult:
    if isinstance(q, FindDocumentsByReferenceId):
        candidates = reg.documents_by_reference_id(q.patient_id, q.reference_ids)
    else:
        candidates = reg.documents_by_patient(q.patient_id, q.statuses)
    return QueryResult(documents=tuple(filter_documents(candidates, q)))


def _find_submission_sets(q: FindSubmissionSets, reg: XdsRegistryReader) -> QueryResult:
    sets = reg.submission_sets_by_patient(q.patient_id, q.statuses)
    return QueryResult(submission_sets=tuple(filter_submission_sets(sets, q)))


def _find_folders(q: FindFolders, reg: XdsRegistryReader) -> QueryResult:
    return QueryResult(folders=tuple(filter_folders(reg.folders_by_patient(q.patient_id, q.statuses), q)))


def _get_all(q: GetAll, reg: XdsRegistryReader) -> QueryResult:
    docs = [
        d
        for d in content_filter(
            reg.documents_by_patient(q.patient_id, q.document_statuses),
            format_codes=q.format_codes,
            confidentiality_codes=q.confidentiality_codes,
            entry_types=q.entry_types,
        )
        if d.status in q.document_statuses
    ]
    sets = [
        s
        for s in reg.submission_sets_by_patient(q.patient_id, q.submission_set_statuses)
        if s.status in q.submission_set_statuses
    ]
    folders = [
        f for f in reg.folders_by_patient(q.patient_id, q.folder_statuses) if f.status in q.folder_statuses
    ]
    ids = {*(d.entry_uuid for d in docs), *(s.entry_uuid for s in sets), *(f.entry_uuid for f in folders)}
    associations = associations_among(reg.associations_of(sorted(ids)), ids) if ids else []
    return QueryResult(tuple(docs), tuple(sets), tuple(folders), tuple(associations))


def _get_documents(q: GetDocuments, reg: XdsRegistryReader) -> QueryResult:
    if q.uuids:
        docs = reg.documents_by_uuid(q.uuids)
    elif q.unique_ids:
        docs = reg.documents_by_unique_id(q.unique_ids)
    else:
        # Without Metadata Update every document is the first version: its logicalID is its entryUUID.
        docs = [
            d for d in reg.documents_by_uuid(q.logical_ids) if (d.logical_id or d.entry_uuid) in q.logical_ids
        ]
    return QueryResult(documents=tuple(docs))


def _get_folders(q: GetFolders, reg: XdsRegistryReader) -> QueryResult:
    if q.uuids:
        return QueryResult(folders=tuple(reg.folders_by_uuid(q.uuids)))
    if q.unique_ids:
        return QueryResult(folders=tuple(reg.folders_by_unique_id(q.unique_ids)))
    return QueryResult(folders=tuple(reg.folders_by_uuid(q.logical_ids)))


def _get_associations(q: GetAssociations, reg: XdsRegistryReader) -> QueryResult:
    wanted = set(q.uuids)
    return QueryResult(
        associations=tuple(
            a for a in reg.associations_of(q.uuids) if a.source in wanted or a.target in wanted
        )
    )


def _get_documents_and_associations(q: GetDocumentsAndAssociations, reg: XdsRegistryReader) -> QueryResult:
    docs = reg.documents_by_uuid(q.uuids) if q.uuids else reg.documents_by_unique_id(q.unique_ids)
    ids = {d.entry_uuid for d in docs}
    associations = (
        [a for a in reg.associations_of(sorted(ids)) if a.source in ids or a.target in ids] if ids else []
    )
    return QueryResult(documents=tuple(docs), associations=tuple(associations))


def _get_submission_sets(q: GetSubmissionSets, reg: XdsRegistryReader) -> QueryResult:
    wanted = set(q.uuids)
    holding = [
        a for a in reg.associations_of(q.uuids) if a.type is AssociationType.HAS_MEMBER and a.target in wanted
    ]
    sets = reg.submission_sets_by_uuid(sorted({a.source for a in holding})) if holding else []
    set_ids = {s.entry_uuid for s in sets}
    return QueryResult(
        submission_sets=tuple(sets), associations=tuple(a for a in holding if a.source in set_ids)
    )


def _get_submission_set_and_contents(q: GetSubmissionSetAndContents, reg: XdsRegistryReader) -> QueryResult:
    found = (
        reg.submission_sets_by_uuid([q.uuid])
        if q.uuid
        else reg.submission_sets_by_unique_id([q.unique_id or ""])
    )
    if not found:
        return QueryResult()
    ss = found[0]
    associations = reg.associations_of([ss.entry_uuid])
    own = members(ss.entry_uuid, associations)
    targets = sorted({a.target for a in own})
    # The set may hold folder-document associations as members: fetch those too.
    inner = [a for a in reg.associations_of(targets) if a.entry_uuid in set(targets)] if targets else []
    docs = content_filter(
        reg.documents_by_uuid(targets) if targets else [],
        format_codes=q.format_codes,
        confidentiality_codes=q.confidentiality_codes,
        entry_types=q.entry_types,
    )
    folders = reg.folders_by_uuid(targets) if targets else []
    return submission_set_contents(ss, [*associations, *inner], docs, folders)


def _get_folder_and_contents(q: GetFolderAndContents, reg: XdsRegistryReader) -> QueryResult:
    found = reg.folders_by_uuid([q.uuid]) if q.uuid else reg.folders_by_unique_id([q.unique_id or ""])
    if not found:
        return QueryResult()
    folder = found[0]
    associations = reg.associations_of([folder.entry_uuid])
    targets = sorted({a.target for a in members(folder.entry_uuid, associations)})
    docs = content_filter(
        reg.documents_by_uuid(targets) if targets else [],
        format_codes=q.format_codes,
        confidentiality_codes=q.confidentiality_codes,
        entry_types=q.entry_types,
    )
    return folder_contents(folder, associations, docs)


def _get_folders_for_document(q: GetFoldersForDocument, reg: XdsRegistryReader) -> QueryResult:
    document = _document(reg, q.uuid, q.unique_id)
    if document is None:
        return QueryResult()
    holders = sorted(
        {
            a.source
            for a in reg.associations_of([document.entry_uuid])
            if a.type is AssociationType.HAS_MEMBER and a.target == document.entry_uuid
        }
    )
    # Submission sets hold documents too; only folders are asked for.
    return QueryResult(folders=tuple(reg.folders_by_uuid(holders)) if holders else ())


def _get_related_documents(q: GetRelatedDocuments, reg: XdsRegistryReader) -> QueryResult:
    document = _document(reg, q.uuid, q.unique_id)
    if document is None:
        return QueryResult()
    links = related(document, reg.associations_of([document.entry_uuid]), q.association_types)
    others = sorted({a.target if a.source == document.entry_uuid else a.source for a in links})
    docs = [d for d in (reg.documents_by_uuid(others) if others else []) if d.object_type in q.entry_types]
    if not docs:
        return QueryResult()
    kept_ids = {d.entry_uuid for d in docs} | {document.entry_uuid}
    return QueryResult(
        documents=(document, *docs),
        associations=tuple(a for a in links if a.source in kept_ids and a.target in kept_ids),
    )


_HANDLERS: dict[type, Callable[..., QueryResult]] = {
    FindDocuments: _find_documents,
    FindDocumentsByReferenceId: _find_documents,
    FindSubmissionSets: _find_submission_sets,
    FindFolders: _find_folders,
    GetAll: _get_all,
    GetDocuments: _get_documents,
    GetFolders: _get_folders,
    GetAssociations: _get_associations,
    GetDocumentsAndAssociations: _get_documents_and_associations,
    GetSubmissionSets: _get_submission_sets,
    GetSubmissionSetAndContents: _get_submission_set_and_contents,
    GetFolderAndContents: _get_folder_and_contents,
    GetFoldersForDocument: _get_folders_for_document,
    GetRelatedDocuments: _get_related_documents,
}


def lookup(query: StoredQuery, registry: XdsRegistryReader) -> QueryResult:
    """Run the lookups and composition of one stored query (no policy checks)."""
    return _HANDLERS[type(query)](query, registry)


def run_stored_query(
    request: StoredQueryRequest,
    registry: XdsRegistryReader,
    *,
    resource_id: str | None,
    policy: QueryPolicy = QueryPolicy(),
) -> QueryResult:
    """Answer an ITI-18 request for the patient of the caller's assertion (``resource_id``): lookups,
    filters, composition, then the patient, single-patient and size rules.

    Raises ResourceIdMismatch (a SOAP Fault), XdsResultNotSinglePatient or XdsTooManyResults (the
    response then carries only the error).
    """
    check_resource_id(resource_id, request.query)
    result = lookup(request.query, registry)
    check_single_patient(result)
    check_resource_id(resource_id, request.query, result)
    check_size(result, request.return_type, policy)
    return result
