"""The XDS registry in DynamoDB (local cloud): every read a key or index lookup, the one write
all-or-nothing with uniqueIds guarded and replaced entries deprecated once."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from archive.data.models import XdsRegistryItem
from archive.data.xds_registry import XdsRegistry
from archive.errors import DuplicateUniqueId, RegistryConflict
from archive.model.registration import FORMAT_CODE
from archive.model.xds import (
    Association,
    AssociationType,
    Channel,
    Code,
    DocumentEntry,
    EntryStatus,
    Folder,
    SubmissionSet,
)

from local.cloud import LocalCloud
from tests.support.dicom import new_uid

CODE = Code("X", "1.2.3", "x")
T0 = datetime(2026, 1, 15, 8, 15, tzinfo=UTC)


def urn() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def document(patient: str, *, refs: tuple[str, ...] = (), at: datetime = T0) -> DocumentEntry:
    return DocumentEntry(
        entry_uuid=urn(),
        unique_id=new_uid(),
        patient_id=patient,
        controller="1.2.246.10.1.10",
        channel=Channel.MANIFEST,
        mime_type="application/dicom",
        class_code=CODE,
        type_code=CODE,
        format_code=FORMAT_CODE,
        confidentiality_codes=(CODE,),
        healthcare_facility_type=CODE,
        practice_setting=CODE,
        creation_time=at,
        hash="0" * 40,
        size=10,
        repository_unique_id="1.2.3.4",
        language_code="fi-FI",
        reference_ids=refs,
    )


def submission(patient: str) -> SubmissionSet:
    return SubmissionSet(urn(), new_uid(), "1.2.246.10.1.99", patient, T0, CODE, "1.2.246.10.1.10")


def has_member(ss: SubmissionSet, target: str, patient: str) -> Association:
    return Association(
        urn(), AssociationType.HAS_MEMBER, ss.entry_uuid, target, patient, submission_set_status="Original"
    )


@pytest.fixture
def registry(cloud: LocalCloud) -> XdsRegistry:
    assert cloud.settings is not None
    return XdsRegistry(cloud.settings)


def test_a_submission_is_found_by_patient_uuid_unique_id_reference_and_association(
    registry: XdsRegistry,
) -> None:
    patient = f"{uuid.uuid4().hex[:10]}^^^&1.2.246.21&ISO"
    study_ref = f"{new_uid()}^^^^urn:ihe:iti:xds:2016:studyInstanceUID"
    doc = document(patient, refs=(study_ref,))
    ss = submission(patient)
    folder = Folder(urn(), new_uid(), patient, T0, "1.2.246.10.1.10", codes=(CODE,))
    links = [has_member(ss, doc.entry_uuid, patient), has_member(ss, folder.entry_uuid, patient)]
    registry.register([doc], ss, [folder], links)
    assert registry.documents_by_patient(patient, [EntryStatus.APPROVED]) == [doc]
    assert registry.documents_by_patient(patient, [EntryStatus.DEPRECATED]) == []
    assert registry.documents_by_uuid([doc.entry_uuid, urn()]) == [doc]
    assert registry.documents_by_unique_id([doc.unique_id]) == [doc]
    assert registry.documents_by_reference_id(patient, [study_ref]) == [doc]
    assert registry.documents_by_reference_id("other^^^&1.2.246.21&ISO", [study_ref]) == []
    assert registry.submission_sets_by_patient(patient, [EntryStatus.APPROVED]) == [ss]
    assert registry.submission_sets_by_uuid([ss.entry_uuid]) == [ss]
    assert registry.submission_sets_by_unique_id([ss.unique_id]) == [ss]
    assert registry.folders_by_patient(patient, [EntryStatus.APPROVED]) == [folder]
    assert (
        registry.folders_by_uuid([folder.entry_uuid])
        == registry.folders_by_unique_id([folder.unique_id])
        == [folder]
    )
    assert {a.entry_uuid for a in registry.associations_of([ss.entry_uuid])} == {a.entry_uuid for a in links}
    assert registry.associations_of([doc.entry_uuid]) == [links[0]]


def test_a_unique_id_is_registered_once_and_nothing_of_the_second_submission_remains(
    registry: XdsRegistry,
) -> None:
    patient = f"{uuid.uuid4().hex[:10]}^^^&1.2.246.21&ISO"
    first = document(patient)
    ss = submission(patient)
    registry.register([first], ss, associations=[has_member(ss, first.entry_uuid, patient)])
    # When another submission reuses the uniqueId
    again = document(patient)
    again = DocumentEntry(**{**again.__dict__, "unique_id": first.unique_id})
    other_ss = submission(patient)
    with pytest.raises(DuplicateUniqueId, match=first.unique_id):
        registry.register([again], other_ss, associations=[has_member(other_ss, again.entry_uuid, patient)])
    # Then nothing of it was written
    assert registry.documents_by_uuid([again.entry_uuid]) == []
    assert registry.submission_sets_by_uuid([other_ss.entry_uuid]) == []
    assert registry.documents_by_patient(patient, [EntryStatus.APPROVED]) == [first]


def test_a_replacement_deprecates_the_original_once(registry: XdsRegistry) -> None:
    patient = f"{uuid.uuid4().hex[:10]}^^^&1.2.246.21&ISO"
    original = document(patient)
    ss = submission(patient)
    registry.register([original], ss, associations=[has_member(ss, original.entry_uuid, patient)])
    replacement = document(patient, at=T0 + timedelta(hours=1))
    ss2 = submission(patient)
    rplc = Association(urn(), AssociationType.REPLACE, replacement.entry_uuid, original.entry_uuid, patient)
    registry.register(
        [replacement],
        ss2,
        associations=[has_member(ss2, replacement.entry_uuid, patient), rplc],
        deprecate=[original.entry_uuid],
    )
    [deprecated] = registry.documents_by_patient(patient, [EntryStatus.DEPRECATED])
    assert deprecated.entry_uuid == original.entry_uuid and deprecated.status is EntryStatus.DEPRECATED
    assert registry.documents_by_patient(patient, [EntryStatus.APPROVED]) == [replacement]
    assert rplc in registry.associations_of([original.entry_uuid])
    # And a second replacement of the same (now deprecated) original is refused, leaving nothing behind
    competing = document(patient)
    ss3 = submission(patient)
    with pytest.raises(RegistryConflict):
        registry.register([competing], ss3, deprecate=[original.entry_uuid])
    assert registry.documents_by_uuid([competing.entry_uuid]) == []


def test_submissions_over_the_transaction_limit_are_written_in_chunks(registry: XdsRegistry) -> None:
    # Given a submission of 25 documents: per document a uniqueId guard, the entry, its HasMember
    # association and that association under both its ends, 127 items with the submission set
    patient = f"{uuid.uuid4().hex[:10]}^^^&1.2.246.21&ISO"
    docs = [document(patient, at=T0 + timedelta(minutes=i)) for i in range(25)]
    ss = submission(patient)
    registry.register(docs, ss, associations=[has_member(ss, d.entry_uuid, patient) for d in docs])
    found = registry.documents_by_patient(patient, [EntryStatus.APPROVED])
    assert sorted(d.entry_uuid for d in found) == sorted(d.entry_uuid for d in docs)
    # And a chunked submission whose second chunk fails (its last association reuses an entryUUID
    # registered before) leaves nothing of its first chunk behind: entries, guards, references
    more = [
        document(patient, refs=(f"{new_uid()}^^^^urn:ihe:iti:xds:2016:studyInstanceUID",)) for _ in range(25)
    ]
    ss2 = submission(patient)
    links = [has_member(ss2, d.entry_uuid, patient) for d in more]
    first_link = registry.associations_of([docs[0].entry_uuid])[0]
    links[-1] = Association(
        first_link.entry_uuid, AssociationType.HAS_MEMBER, ss2.entry_uuid, more[-1].entry_uuid, patient
    )
    with pytest.raises(RegistryConflict):
        registry.register(more, ss2, associations=links)
    assert registry.documents_by_uuid([d.entry_uuid for d in more]) == []
    assert registry.documents_by_unique_id([d.unique_id for d in more]) == []
    assert registry.documents_by_reference_id(patient, [more[0].reference_ids[0]]) == []
    assert registry.submission_sets_by_uuid([ss2.entry_uuid]) == []
    assert registry.associations_of([docs[0].entry_uuid]) == [first_link]
    assert len(registry.documents_by_patient(patient, [EntryStatus.APPROVED])) == 25


def test_the_patient_index_sorts_by_status_then_utc_creation_time(registry: XdsRegistry) -> None:
    patient = f"{uuid.uuid4().hex[:10]}^^^&1.2.246.21&ISO"
    doc = document(patient)
    ss = submission(patient)
    registry.register([doc], ss, associations=[has_member(ss, doc.entry_uuid, patient)])
    [item] = XdsRegistryItem.by_patient.query(f"{patient}#DocumentEntry")
    assert item.status_time == f"Approved#{T0.isoformat()}"
