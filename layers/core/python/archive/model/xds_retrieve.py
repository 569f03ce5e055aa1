"""Retrieve requests as typed values: ITI-43 Retrieve Document Set and RAD-69 Retrieve Imaging
Document Set (StudyRequest > SeriesRequest > DocumentRequest, TransferSyntaxUIDList)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DocumentRequest:
    """One document asked for; in RAD-69 ``document_unique_id`` is a SOP Instance UID."""

    repository_unique_id: str
    document_unique_id: str
    home_community_id: str | None = None


@dataclass(frozen=True)
class SeriesRequest:
    series_instance_uid: str
    documents: tuple[DocumentRequest, ...]


@dataclass(frozen=True)
class StudyRequest:
    study_instance_uid: str
    series: tuple[SeriesRequest, ...]


@dataclass(frozen=True)
class ImagingRetrieveRequest:
    """RAD-69: the instances by study and series, and the transfer syntaxes the consumer accepts
    in order of preference."""

    studies: tuple[StudyRequest, ...]
    transfer_syntaxes: tuple[str, ...]

    def documents(self) -> list[tuple[str, str, DocumentRequest]]:
        """Every requested instance with its study and series UID, in request order."""
        return [
            (study.study_instance_uid, series.series_instance_uid, document)
            for study in self.studies
            for series in study.series
            for document in series.documents
        ]


@dataclass(frozen=True)
class RetrievedDocument:
    """One document of a retrieve answer: its ids, MIME type and the MTOM part that carries it."""

    repository_unique_id: str
    document_unique_id: str
    mime_type: str
    content_id: str
    home_community_id: str | None = None
