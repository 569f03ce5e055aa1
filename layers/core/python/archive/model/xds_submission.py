"""One ITI-42 Register Document Set-b submission, decoded and validated: what the registry writes
all-or-nothing (``XdsRegistry.register``)."""

from __future__ import annotations

from dataclasses import dataclass

from archive.model.xds import Association, DocumentEntry, Folder, SubmissionSet


@dataclass(frozen=True)
class Submission:
    submission_set: SubmissionSet
    documents: tuple[DocumentEntry, ...] = ()
    folders: tuple[Folder, ...] = ()
    associations: tuple[Association, ...] = ()
    # entryUUIDs of registered documents this submission replaces (RPLC, XFRM_RPLC): to be Deprecated.
    deprecate: tuple[str, ...] = ()

    @property
    def patient_id(self) -> str:
        return self.submission_set.patient_id
