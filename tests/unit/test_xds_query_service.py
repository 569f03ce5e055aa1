"""The pure parts of the ITI-18 stored query service: matching (codes AND/OR, time ranges, author
LIKE, status, entry type), the filters of FindDocuments/FindSubmissionSets/FindFolders, the
composition of GetSubmissionSetAndContents, GetFolderAndContents, GetAll and GetRelatedDocuments,
and the single-patient and LeafClass size rules. Model values are built in the tests."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest
from archive.errors import XdsResultNotSinglePatient, XdsTooManyResults
from archive.model.xds import AssociationType, Author, Code, DocumentEntryType, EntryStatus
from archive.model.xds_query import (
    CodeKey,
    FindDocuments,
    FindDocumentsByReferenceId,
    FindFolders,
    FindSubmissionSets,
    QueryResult,
    ReturnType,
    TimeRange,
)
from archive.services.xds_query import (
    QueryPolicy,
    associations_among,
    authors_match,
    check_single_patient,
    check_size,
    codes_match,
    content_filter,
    filter_documents,
    filter_folders,
    filter_submission_sets,
    folder_contents,
    in_range,
    related,
    submission_set_contents,
)

from tests.support.xds import (
    MANIFEST_FORMAT,
    OTHER_PATIENT,
    PATIENT,
    document,
    folder,
    has_member,
    relation,
    submission_set,
)

APPROVED = frozenset({EntryStatus.APPROVED})
CT = Code("CT", "1.2.840.10008.2.16.4", "CT")
MR = Code("MR", "1.2.840.10008.2.16.4", "MR")
HEAD = Code("T-D1100", "SRT", "Head")


def key(code: Code) -> CodeKey:
    return CodeKey(code.code, code.scheme)


def t(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def test_code_lists_and_within_or_across():
    assert codes_match([CT], ())
    assert codes_match([CT], (frozenset({key(CT), key(MR)}),))  # OR
    assert not codes_match([HEAD], (frozenset({key(CT), key(MR)}),))
    assert codes_match([CT, HEAD], (frozenset({key(CT), key(MR)}), frozenset({key(HEAD)})))  # AND
    assert not codes_match([CT], (frozenset({key(CT)}), frozenset({key(HEAD)})))
    # the scheme is part of the code
    assert not codes_match([Code("CT", "other-scheme", "CT")], (frozenset({key(CT)}),))


def test_time_range_from_inclusive_to_exclusive():
    window = TimeRange(t(2024, 1, 1), t(2024, 2, 1))
    assert in_range(t(2024, 1, 1), window)
    assert not in_range(t(2024, 2, 1), window)
    assert not in_range(t(2023, 12, 31, 23, 59, 59), window)
    assert in_range(None, TimeRange())
    assert not in_range(None, window)  # a bound on a time the object lacks: no match
    assert in_range(t(2030, 1, 1), TimeRange(start=t(2024, 1, 1)))


def test_author_like_patterns():
    authors = [Author(person="^Radiologist^Rita"), Author(person="Smith^John")]
    assert authors_match(authors, [])
    assert authors_match(authors, ["%Rita"])
    assert authors_match(authors, ["smith^j%"])  # case-insensitive
    assert authors_match(authors, ["Smit_^John"])
    assert not authors_match(authors, ["Smit^John"])
    assert not authors_match(authors, ["%.%"])  # a dot is a dot, not a regular expression
    assert not authors_match([Author(institutions=("X",))], ["%"])


def find(**kw) -> FindDocuments:
    return FindDocuments(patient_id=PATIENT, statuses=APPROVED, **kw)


def test_find_documents_filters_by_each_parameter():
    report = document()
    manifest = document(
        format_code=MANIFEST_FORMAT,
        mime_type="application/dicom",
        event_codes=(MR, HEAD),
        creation_time=t(2024, 6, 1),
        authors=(),
    )
    deprecated = document(status=EntryStatus.DEPRECATED)
    on_demand = document(object_type=DocumentEntryType.ON_DEMAND)
    other = document(patient_id=OTHER_PATIENT)
    everything = [report, manifest, deprecated, on_demand, other]

    def ids(q):
        return [d.entry_uuid for d in filter_documents(everything, q)]

    assert ids(find()) == [report.entry_uuid, manifest.entry_uuid]
    assert ids(find(format_codes=(frozenset({key(MANIFEST_FORMAT)}),))) == [manifest.entry_uuid]
    assert ids(find(event_codes=(frozenset({key(CT), key(MR)}), frozenset({key(HEAD)})))) == [
        manifest.entry_uuid
    ]
    assert ids(find(event_codes=(frozenset({key(CT)}),))) == [report.entry_uuid]
    assert ids(find(class_codes=(frozenset({key(report.class_code)}),))) == [
        report.entry_uuid,
        manifest.entry_uuid,
    ]
    assert ids(find(type_codes=(frozenset({CodeKey("x", "y")}),))) == []
    assert ids(find(practice_setting_codes=(frozenset({key(report.practice_setting)}),))) == [
        report.entry_uuid,
        manifest.entry_uuid,
    ]
    assert ids(find(healthcare_facility_type_codes=(frozenset({CodeKey("x", "y")}),))) == []
    assert ids(find(confidentiality_codes=(frozenset({CodeKey("N", "2.16.840.1.113883.5.25")}),))) == [
        report.entry_uuid,
        manifest.entry_uuid,
    ]
    assert ids(find(creation_time=TimeRange(t(2024, 5, 15)))) == [manifest.entry_uuid]
    assert ids(find(service_start_time=TimeRange(t(2024, 5, 2, 9), t(2024, 5, 2, 10)))) == [
        report.entry_uuid,
        manifest.entry_uuid,
    ]
    assert ids(find(service_stop_time=TimeRange(end=t(2024, 5, 2, 9, 20)))) == []
    assert ids(find(author_persons=("%Rita%",))) == [report.entry_uuid]
    assert ids(replace(find(), statuses=frozenset({EntryStatus.DEPRECATED}))) == [deprecated.entry_uuid]
    assert ids(find(entry_types=frozenset({DocumentEntryType.ON_DEMAND}))) == [on_demand.entry_uuid]


def test_find_documents_by_reference_id_matches_the_full_cxi():
    study = "1.2.3.4.5^^^^urn:ihe:iti:xds:2016:studyInstanceUID"
    accession = "ACC1^^^&1.2.246.10.12345678.10&ISO^urn:ihe:iti:xds:2013:accession"
    manifest = document(reference_ids=(study, accession), format_code=MANIFEST_FORMAT)
    report = document(reference_ids=(accession,))
    unrelated = document(reference_ids=("1.2.3.4.5^^^^urn:ihe:iti:xds:2013:accession",))
    q = FindDocumentsByReferenceId(patient_id=PATIENT, statuses=APPROVED, reference_ids=(accession,))
    assert filter_documents([manifest, report, unrelated], q) == [manifest, report]
    q = FindDocumentsByReferenceId(patient_id=PATIENT, statuses=APPROVED, reference_ids=(study,))
    assert filter_documents([manifest, report, unrelated], q) == [manifest]


def test_find_submission_sets_and_folders_filters():
    ss = submission_set()
    late = submission_set(
        submission_time=t(2025, 1, 1), source_id="9.9", authors=(Author(person="Other^Olga"),)
    )
    q = FindSubmissionSets(patient_id=PATIENT, statuses=APPROVED)
    assert filter_submission_sets([ss, late], q) == [ss, late]
    assert filter_submission_sets([ss, late], replace(q, source_ids=("9.9",))) == [late]
    assert filter_submission_sets([ss, late], replace(q, submission_time=TimeRange(end=t(2024, 12, 31)))) == [
        ss
    ]
    assert filter_submission_sets([ss, late], replace(q, author_person="Other%")) == [late]
    assert (
        filter_submission_sets([ss, late], replace(q, content_type_codes=(frozenset({CodeKey("x", "y")}),)))
        == []
    )
    f1, f2 = folder(), folder(codes=(MR,), last_update_time=t(2020, 1, 1))
    fq = FindFolders(patient_id=PATIENT, statuses=APPROVED)
    assert filter_folders([f1, f2], replace(fq, codes=(frozenset({key(MR)}),))) == [f2]
    assert filter_folders([f1, f2], replace(fq, last_update_time=TimeRange(start=t(2024, 1, 1)))) == [f1]
    assert filter_folders([replace(f1, status=EntryStatus.DEPRECATED)], fq) == []


def test_submission_set_and_contents_keeps_only_what_joins_the_kept_objects():
    # Given a submission set holding a report, a manifest and a folder with the report in it
    ss, report, manifest, f = submission_set(), document(), document(format_code=MANIFEST_FORMAT), folder()
    ss_report, ss_manifest, ss_folder = (
        has_member(ss.entry_uuid, report.entry_uuid),
        has_member(ss.entry_uuid, manifest.entry_uuid),
        has_member(ss.entry_uuid, f.entry_uuid),
    )
    folder_report = has_member(f.entry_uuid, report.entry_uuid, None)
    ss_folder_report = has_member(ss.entry_uuid, folder_report.entry_uuid)
    associations = [ss_report, ss_manifest, ss_folder, folder_report, ss_folder_report]
    # When only manifests pass the format filter
    kept = content_filter(
        [report, manifest],
        format_codes=(frozenset({key(MANIFEST_FORMAT)}),),
        confidentiality_codes=(),
        entry_types={DocumentEntryType.STABLE},
    )
    result = submission_set_contents(ss, associations, kept, [f])
    # Then the report and every association to it are left out
    assert result.submission_sets == (ss,) and result.documents == (manifest,) and result.folders == (f,)
    assert set(result.associations) == {ss_manifest, ss_folder}
    # And without a filter, the folder-document association the set holds comes along
    everything = submission_set_contents(ss, associations, [report, manifest], [f])
    assert set(everything.associations) == set(associations)


def test_folder_contents():
    f, a, b, elsewhere = folder(), document(), document(), document()
    fa, fb = has_member(f.entry_uuid, a.entry_uuid, None), has_member(f.entry_uuid, b.entry_uuid, None)
    result = folder_contents(f, [fa, fb, has_member("urn:uuid:x", elsewhere.entry_uuid)], [a, elsewhere])
    assert result.folders == (f,) and result.documents == (a,) and result.associations == (fa,)


def test_get_all_associations_join_returned_objects():
    ss, doc, f = submission_set(), document(), folder()
    inside = [has_member(ss.entry_uuid, doc.entry_uuid), has_member(f.entry_uuid, doc.entry_uuid, None)]
    holds_inner = has_member(ss.entry_uuid, inside[1].entry_uuid)
    to_outside = relation(AssociationType.APPEND, doc.entry_uuid, "urn:uuid:outside")
    found = associations_among(
        [*inside, holds_inner, to_outside], {ss.entry_uuid, doc.entry_uuid, f.entry_uuid}
    )
    assert set(found) == {*inside, holds_inner}


def test_related_documents_by_association_type():
    original, replacement, addendum = document(), document(), document()
    rplc = relation(AssociationType.REPLACE, replacement.entry_uuid, original.entry_uuid)
    apnd = relation(AssociationType.APPEND, addendum.entry_uuid, original.entry_uuid)
    both = [rplc, apnd, has_member("urn:uuid:ss", original.entry_uuid)]
    assert related(original, both, {AssociationType.REPLACE}) == [rplc]
    assert related(original, both, {AssociationType.REPLACE, AssociationType.APPEND}) == [rplc, apnd]
    assert related(replacement, both, {AssociationType.REPLACE}) == [rplc]
    assert related(addendum, both, {AssociationType.REPLACE}) == []


def test_single_patient_rule():
    check_single_patient(QueryResult(documents=(document(), document())))
    with pytest.raises(XdsResultNotSinglePatient):
        check_single_patient(
            QueryResult(documents=(document(),), submission_sets=(submission_set(patient_id=OTHER_PATIENT),))
        )


def test_leafclass_limit_and_objectref_exemption():
    result = QueryResult(documents=tuple(document() for _ in range(3)), associations=(has_member("a", "b"),))
    check_size(result, ReturnType.LEAF_CLASS, QueryPolicy(max_leaf_class=4))
    with pytest.raises(XdsTooManyResults):
        check_size(result, ReturnType.LEAF_CLASS, QueryPolicy(max_leaf_class=3))
    check_size(result, ReturnType.OBJECT_REF, QueryPolicy(max_leaf_class=3))


def test_resource_id_must_be_the_queried_patient():
    from archive.errors import ResourceIdMismatch
    from archive.model.xds_query import GetDocuments
    from archive.services.xds_query import check_resource_id, same_patient

    # A namespace in the assigning authority does not make another patient
    assert same_patient(PATIENT, "020516C903K^^^HETU&1.2.246.21&ISO")
    assert not same_patient(PATIENT, "020516C903K^^^&1.2.246.10.1.22.2024&ISO")
    check_resource_id(PATIENT, find())
    with pytest.raises(ResourceIdMismatch):
        check_resource_id(OTHER_PATIENT, find())  # refused before any lookup
    with pytest.raises(ResourceIdMismatch):
        check_resource_id(None, find())
    by_id = GetDocuments(uuids=("urn:uuid:1",))
    check_resource_id(OTHER_PATIENT, by_id)  # nothing to compare before the lookup
    with pytest.raises(ResourceIdMismatch):
        check_resource_id(OTHER_PATIENT, by_id, QueryResult(documents=(document(),)))
