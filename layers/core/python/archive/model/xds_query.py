"""Registry Stored Query (ITI-18) requests as typed values: one class per stored query of ITI TF-2a
3.18.4.1.2.3.7, holding its parameters already decoded (UTC datetimes, codes, statuses).

Conventions, as the TF defines the matching:

- A :data:`CodeList` is an AND of OR-groups: an object matches when, for every group, it has at least
  one of the group's codes. A parameter sent in one Slot is one group (OR); a parameter that allows
  AND/OR semantics may be sent in several Slots, one group each. ``()`` means "no condition".
- A :class:`TimeRange` matches ``start <= t < end``; an object without the time does not match a
  range that has a bound.
- ``entry_types`` defaults to stable documents only, as the TF says when $XDSDocumentEntryType is absent.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from archive.model.xds import (
    Association,
    AssociationType,
    DocumentEntry,
    DocumentEntryType,
    EntryStatus,
    Folder,
    SubmissionSet,
)

STABLE_ONLY: frozenset[DocumentEntryType] = frozenset({DocumentEntryType.STABLE})


class ReturnType(StrEnum):
    LEAF_CLASS = "LeafClass"
    OBJECT_REF = "ObjectRef"


@dataclass(frozen=True)
class CodeKey:
    """A code as a query names it (``code^^scheme``): code and coding scheme, no display name."""

    code: str
    scheme: str


CodeList = tuple[frozenset[CodeKey], ...]


@dataclass(frozen=True)
class TimeRange:
    start: datetime | None = None  # inclusive
    end: datetime | None = None  # exclusive

    @property
    def bounded(self) -> bool:
        return self.start is not None or self.end is not None


@dataclass(frozen=True)
class FindDocuments:
    patient_id: str
    statuses: frozenset[EntryStatus]
    class_codes: CodeList = ()
    type_codes: CodeList = ()
    practice_setting_codes: CodeList = ()
    healthcare_facility_type_codes: CodeList = ()
    format_codes: CodeList = ()
    event_codes: CodeList = ()
    confidentiality_codes: CodeList = ()
    creation_time: TimeRange = TimeRange()
    service_start_time: TimeRange = TimeRange()
    service_stop_time: TimeRange = TimeRange()
    author_persons: tuple[str, ...] = ()  # SQL LIKE patterns (% and _), any may match
    entry_types: frozenset[DocumentEntryType] = STABLE_ONLY


@dataclass(frozen=True)
class FindDocumentsByReferenceId(FindDocuments):
    # CXi values as registered (``<uid>^^^^urn:ihe:iti:xds:2016:studyInstanceUID``); any may match.
    reference_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class FindSubmissionSets:
    patient_id: str
    statuses: frozenset[EntryStatus]
    source_ids: tuple[str, ...] = ()
    submission_time: TimeRange = TimeRange()
    author_person: str | None = None
    content_type_codes: CodeList = ()


@dataclass(frozen=True)
class FindFolders:
    patient_id: str
    statuses: frozenset[EntryStatus]
    last_update_time: TimeRange = TimeRange()
    codes: CodeList = ()


@dataclass(frozen=True)
class GetAll:
    patient_id: str
    document_statuses: frozenset[EntryStatus]
    submission_set_statuses: frozenset[EntryStatus]
    folder_statuses: frozenset[EntryStatus]
    format_codes: CodeList = ()
    confidentiality_codes: CodeList = ()
    entry_types: frozenset[DocumentEntryType] = STABLE_ONLY


@dataclass(frozen=True)
class GetDocuments:
    """Exactly one of the three lists is non-empty."""

    uuids: tuple[str, ...] = ()
    unique_ids: tuple[str, ...] = ()
    logical_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class GetFolders:
    uuids: tuple[str, ...] = ()
    unique_ids: tuple[str, ...] = ()
    logical_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class GetAssociations:
    uuids: tuple[str, ...]


@dataclass(frozen=True)
class GetDocumentsAndAssociations:
    uuids: tuple[str, ...] = ()
    unique_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class GetSubmissionSets:
    uuids: tuple[str, ...]  # of any objects: the submission sets that hold them are returned


@dataclass(frozen=True)
class GetSubmissionSetAndContents:
    """Exactly one of ``uuid`` and ``unique_id``."""

    uuid: str | None = None
    unique_id: str | None = None
    format_codes: CodeList = ()
    confidentiality_codes: CodeList = ()
    entry_types: frozenset[DocumentEntryType] = STABLE_ONLY


@dataclass(frozen=True)
class GetFolderAndContents:
    uuid: str | None = None
    unique_id: str | None = None
    format_codes: CodeList = ()
    confidentiality_codes: CodeList = ()
    entry_types: frozenset[DocumentEntryType] = STABLE_ONLY


@dataclass(frozen=True)
class GetFoldersForDocument:
    uuid: str | None = None
    unique_id: str | None = None


@dataclass(frozen=True)
class GetRelatedDocuments:
    association_types: frozenset[AssociationType]
    uuid: str | None = None
    unique_id: str | None = None
    entry_types: frozenset[DocumentEntryType] = STABLE_ONLY


StoredQuery = (
    FindDocuments
    | FindDocumentsByReferenceId
    | FindSubmissionSets
    | FindFolders
    | GetAll
    | GetDocuments
    | GetFolders
    | GetAssociations
    | GetDocumentsAndAssociations
    | GetSubmissionSets
    | GetSubmissionSetAndContents
    | GetFolderAndContents
    | GetFoldersForDocument
    | GetRelatedDocuments
)


@dataclass(frozen=True)
class StoredQueryRequest:
    """One ITI-18 request: the stored query and how the answer is to be shaped."""

    query: StoredQuery
    return_type: ReturnType
    return_composed_objects: bool = True
    home_community_id: str | None = None
    metadata_level: int = 1


@dataclass(frozen=True)
class QueryResult:
    """What a stored query found, in the order it is to be returned."""

    documents: tuple[DocumentEntry, ...] = ()
    submission_sets: tuple[SubmissionSet, ...] = ()
    folders: tuple[Folder, ...] = ()
    associations: tuple[Association, ...] = ()

    def __len__(self) -> int:
        return len(self.documents) + len(self.submission_sets) + len(self.folders) + len(self.associations)

    def entry_uuids(self) -> list[str]:
        """The ids of every object, as an ObjectRef answer lists them."""
        return [
            *(d.entry_uuid for d in self.documents),
            *(s.entry_uuid for s in self.submission_sets),
            *(f.entry_uuid for f in self.folders),
            *(a.entry_uuid for a in self.associations),
        ]
