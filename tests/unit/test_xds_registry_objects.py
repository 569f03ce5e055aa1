"""ebRIM encoding of the registry values (AdhocQueryResponse LeafClass/ObjectRef, RegistryResponse)
against the official schemas, and ITI-42 SubmitObjectsRequest decoding with ITI TF-3 4.1 validation:
the public ebRS 3.0 sample, a round trip through our own encoder, and each error class."""

from __future__ import annotations

import copy
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from archive.errors import (
    SubmissionRejected,
    XdsDuplicateUniqueIdInMessage,
    XdsPatientIdDoesNotMatch,
    XdsRegistryMetadataError,
    XdsTooManyResults,
)
from archive.model.xds import AssociationType, Channel, EntryStatus
from archive.model.xds_query import QueryResult, ReturnType
from archive.xds import ns
from archive.xds.ebrim import association, document_entry
from archive.xds.ebrim import folder as folder_element
from archive.xds.ebrim import submission_set as set_element
from archive.xds.response import adhoc_query_response, registry_response
from archive.xds.submission import decode_submission
from archive.xds.xml import parse_xml
from lxml import etree

from tests.support.xds import (
    HOSPITAL,
    OTHER_PATIENT,
    XDS,
    assert_valid,
    document,
    folder,
    has_member,
    new_uuid,
    relation,
    submission_set,
)

NOW = datetime(2024, 5, 3, 8, 0, tzinfo=UTC)
NSMAP = {"rim": ns.RIM, "rs": ns.RS, "query": ns.QUERY}


def submit_request(ss, documents=(), folders=(), associations=()) -> etree._Element:
    body = etree.Element(ns.q(ns.LCM, "SubmitObjectsRequest"), nsmap={"lcm": ns.LCM, "rim": ns.RIM})
    objects = etree.SubElement(body, ns.q(ns.RIM, "RegistryObjectList"))
    for d in documents:
        document_entry(objects, d)
    set_element(objects, ss)
    for f in folders:
        folder_element(objects, f)
    for a in associations:
        association(objects, a)
    return parse_xml(etree.tostring(body))  # as received: bytes through the hardened parser


def one_report_submission():
    ss, doc = submission_set(), document()
    return ss, doc, [has_member(ss.entry_uuid, doc.entry_uuid)]


# --- encoding --------------------------------------------------------------------------------


def test_leafclass_response_validates_and_carries_every_attribute():
    # Given a document (times not in UTC on purpose), its submission set, a folder and associations
    doc = document(creation_time=datetime(2024, 5, 2, 13, 30, tzinfo=timezone(timedelta(hours=3))))
    ss, f = submission_set(), folder()
    result = QueryResult(
        documents=(doc,),
        submission_sets=(ss,),
        folders=(f,),
        associations=(
            has_member(ss.entry_uuid, doc.entry_uuid),
            has_member(f.entry_uuid, doc.entry_uuid, None),
        ),
    )
    # When the answer is encoded
    body = adhoc_query_response(result, return_type=ReturnType.LEAF_CLASS)
    # Then it is valid ebRS 3.0 and says what the registry holds, as ITI TF-3 4.2.3 lays it out
    assert_valid(body)
    assert body.get("status") == ns.STATUS_SUCCESS
    eo = body.find("rim:RegistryObjectList/rim:ExtrinsicObject", NSMAP)
    assert eo.get("id") == doc.entry_uuid and eo.get("status") == EntryStatus.APPROVED
    assert eo.get("objectType") == "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1"

    def slot(name: str) -> list[str]:
        return [v.text for v in eo.findall(f"rim:Slot[@name='{name}']/rim:ValueList/rim:Value", NSMAP)]

    assert slot("creationTime") == ["20240502103000"]  # 13:30 +03:00 in UTC
    assert slot("serviceStartTime") == ["20240502090000"]
    assert slot("hash") == [doc.hash] and slot("size") == ["1234"]
    assert slot("repositoryUniqueId") == [doc.repository_unique_id]
    assert slot("urn:ihe:iti:xds:2013:referenceIdList") == list(doc.reference_ids)
    schemes = {c.get("classificationScheme"): c for c in eo.findall("rim:Classification", NSMAP)}
    assert schemes[ns.DE_CLASS_CODE].get("nodeRepresentation") == "18748-4"
    assert (
        schemes[ns.DE_CLASS_CODE].findtext(
            "rim:Slot[@name='codingScheme']/rim:ValueList/rim:Value", namespaces=NSMAP
        )
        == "2.16.840.1.113883.6.1"
    )
    assert schemes[ns.DE_EVENT_CODE].get("nodeRepresentation") == "CT"
    assert (
        schemes[ns.DE_AUTHOR].findtext(
            "rim:Slot[@name='authorPerson']/rim:ValueList/rim:Value", namespaces=NSMAP
        )
        == "^Radiologist^Rita"
    )
    ids = {e.get("identificationScheme"): e.get("value") for e in eo.findall("rim:ExternalIdentifier", NSMAP)}
    assert ids == {ns.DE_PATIENT_ID: doc.patient_id, ns.DE_UNIQUE_ID: doc.unique_id}
    packages = body.findall("rim:RegistryObjectList/rim:RegistryPackage", NSMAP)
    nodes = {c.get("classificationNode") for p in packages for c in p.findall("rim:Classification", NSMAP)}
    assert {ns.NODE_SUBMISSION_SET, ns.NODE_FOLDER} <= nodes
    assert len(body.findall("rim:RegistryObjectList/rim:Association", NSMAP)) == 2
    # The same object encodes identically every time (composed ids are name-based).
    assert etree.tostring(adhoc_query_response(result)) == etree.tostring(body)


def test_objectref_response_lists_ids_only():
    doc, ss = document(), submission_set()
    body = adhoc_query_response(
        QueryResult(documents=(doc,), submission_sets=(ss,)), return_type=ReturnType.OBJECT_REF
    )
    assert_valid(body)
    assert [o.get("id") for o in body.findall("rim:RegistryObjectList/rim:ObjectRef", NSMAP)] == [
        doc.entry_uuid,
        ss.entry_uuid,
    ]
    assert body.find(".//rim:ExtrinsicObject", NSMAP) is None


def test_error_responses_validate_with_severity_and_status():
    failure = adhoc_query_response(
        None, errors=[XdsTooManyResults("2000 objects", location="$XDSDocumentEntryPatientId")]
    )
    assert_valid(failure)
    assert failure.get("status") == ns.STATUS_FAILURE
    error = failure.find("rs:RegistryErrorList/rs:RegistryError", NSMAP)
    assert error.get("errorCode") == "XDSTooManyResults"
    assert error.get("severity") == ns.SEVERITY_ERROR
    assert error.get("location") == "$XDSDocumentEntryPatientId"
    partial = adhoc_query_response(QueryResult(documents=(document(),)), errors=[XdsTooManyResults("x")])
    assert partial.get("status") == ns.STATUS_PARTIAL_SUCCESS
    warned = adhoc_query_response(
        QueryResult(documents=(document(),)), errors=[XdsTooManyResults("x", warning=True)]
    )
    assert warned.get("status") == ns.STATUS_SUCCESS
    assert warned.find("rs:RegistryErrorList", NSMAP).get("highestSeverity") == ns.SEVERITY_WARNING
    rejected = registry_response([XdsRegistryMetadataError("hash missing", location="Document01")])
    assert_valid(rejected)
    assert rejected.get("status") == ns.STATUS_FAILURE
    assert registry_response().get("status") == ns.STATUS_SUCCESS


# --- ITI-42 decoding -------------------------------------------------------------------------


def test_submission_round_trips_through_our_encoder():
    # Given a submission of a report, a folder holding it, and a replacement of an older report
    ss, doc, f = submission_set(), document(), folder()
    old = new_uuid()
    associations = [
        has_member(ss.entry_uuid, doc.entry_uuid),
        has_member(ss.entry_uuid, f.entry_uuid),
        has_member(f.entry_uuid, doc.entry_uuid, None),
        relation(AssociationType.REPLACE, doc.entry_uuid, old),
    ]
    # When it is encoded with our ebRIM encoder and decoded as an ITI-42 body
    submission = decode_submission(submit_request(ss, [doc], [f], associations), controller=HOSPITAL, now=NOW)
    # Then every value comes back, the registry-set fields set, and the replaced document deprecated
    assert submission.submission_set == ss
    assert submission.documents == (doc,)
    assert submission.folders == (replace(f, last_update_time=NOW),)
    assert submission.associations == tuple(associations)
    assert submission.deprecate == (old,)
    assert submission.patient_id == ss.patient_id


def test_public_ebrs30_sample_decodes_and_lacks_only_the_repository_attributes():
    # The sample is a Provide-and-Register (ITI-41) body: hash, size and repositoryUniqueId are the
    # repository's additions that ITI-42 requires.
    root = parse_xml((XDS / "ITI-42_SubmitObjectsRequest_ebrs30.xml").read_bytes())
    with pytest.raises(SubmissionRejected) as caught:
        decode_submission(root, controller=HOSPITAL, now=NOW)
    assert sorted(str(e) for e in caught.value.errors) == [
        "required slot hash is missing",
        "required slot repositoryUniqueId is missing",
        "required slot size is missing",
    ]
    assert {e.location for e in caught.value.errors} == {"Document01"}


def adapted_sample() -> etree._Element:
    """The public sample as the repository forwards it: with hash, size and repositoryUniqueId."""
    root = parse_xml((XDS / "ITI-42_SubmitObjectsRequest_ebrs30.xml").read_bytes())
    eo = root.find(".//rim:ExtrinsicObject", NSMAP)
    for name, value in (
        ("hash", "4cf4f82d78b5e2aac35c31bca8cb79fe6bd6a41e"),
        ("size", "3291"),
        ("repositoryUniqueId", "1.2.3.4"),
    ):
        s = etree.Element(ns.q(ns.RIM, "Slot"), name=name)
        etree.SubElement(etree.SubElement(s, ns.q(ns.RIM, "ValueList")), ns.q(ns.RIM, "Value")).text = value
        eo.insert(0, s)
    return root


def test_adapted_public_sample_decodes_into_model_values():
    submission = decode_submission(adapted_sample(), controller=HOSPITAL, now=NOW)
    ss, (doc,) = submission.submission_set, submission.documents
    assert ss.unique_id == "1.3.6.1.4.1.21367.2005.3.9999.33" and ss.source_id == "3670984664"
    assert ss.submission_time == datetime(2004, 12, 25, 23, 50, 50, tzinfo=UTC)
    assert ss.content_type.code == "History and Physical"  # its scheme UUID has a stray space in the sample
    assert ss.authors[0].person == "Sherry Dopplemeyer"
    assert doc.patient_id == "SELF-5^^^&1.3.6.1.4.1.21367.2005.3.7&ISO" == ss.patient_id
    assert doc.unique_id == "1.3.6.1.4.1.21367.2005.3.9999.32"
    assert doc.creation_time == datetime(2005, 12, 24, tzinfo=UTC)
    assert doc.service_start_time == datetime(2004, 12, 23, 8, 0, tzinfo=UTC)
    assert doc.class_code.code == "History and Physical" and doc.type_code.code == "34108-1"
    assert doc.authors[0].institutions == ("Cleveland Clinic", "Parma Community")
    assert doc.authors[0].specialties == ("Orthopedic",)  # sent as authorSpeciality
    assert doc.source_patient_info[1] == "PID-5|Doe^John^^^"
    assert (
        doc.entry_uuid.startswith("urn:uuid:")
        and doc.channel is Channel.REPORT
        and doc.controller == HOSPITAL
    )
    kinds = {a.type for a in submission.associations}
    assert kinds == {AssociationType.HAS_MEMBER, AssociationType.IS_SNAPSHOT_OF}
    member = next(a for a in submission.associations if a.type is AssociationType.HAS_MEMBER)
    assert (member.source, member.target, member.submission_set_status) == (
        ss.entry_uuid,
        doc.entry_uuid,
        "Original",
    )
    assert submission.deprecate == ()


def rejected(root: etree._Element) -> list:
    with pytest.raises(SubmissionRejected) as caught:
        decode_submission(root, controller=HOSPITAL, now=NOW)
    return list(caught.value.errors)


def test_two_patients_in_one_submission():
    ss, doc, assoc = one_report_submission()
    errors = rejected(submit_request(ss, [replace(doc, patient_id=OTHER_PATIENT)], associations=assoc))
    assert [type(e) for e in errors] == [XdsPatientIdDoesNotMatch]


def test_duplicate_unique_id_in_message():
    ss, doc, assoc = one_report_submission()
    twin = document(unique_id=doc.unique_id)
    errors = rejected(
        submit_request(ss, [doc, twin], associations=[*assoc, has_member(ss.entry_uuid, twin.entry_uuid)])
    )
    assert [e.code for e in errors] == ["XDSRegistryDuplicateUniqueIdInMessage"]
    assert isinstance(errors[0], XdsDuplicateUniqueIdInMessage)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda eo: eo.set("id", "urn:uuid:not-a-uuid"), "is not a valid UUID"),
        (lambda eo: _slot(eo, "creationTime").__setattr__("text", "2024-05-02T10:30:00Z"), "creationTime"),
        (lambda eo: _slot(eo, "creationTime").__setattr__("text", "20240502103000+0300"), "creationTime"),
        (lambda eo: _slot(eo, "hash").__setattr__("text", "xyz"), "not a SHA-1"),
        (lambda eo: _slot(eo, "size").__setattr__("text", "-1"), "non-negative"),
        (lambda eo: _remove_scheme(eo, ns.DE_CLASS_CODE), "classCode is missing"),
        (lambda eo: _remove_scheme(eo, ns.DE_CONFIDENTIALITY_CODE), "confidentialityCode is missing"),
        (lambda eo: _remove_ext(eo, ns.DE_UNIQUE_ID), "uniqueId must be given once"),
        (lambda eo: _ext(eo, ns.DE_PATIENT_ID).set("value", "123"), "is not a CX"),
        (
            lambda eo: eo.set("objectType", "urn:uuid:34268e47-fdf5-41a6-ba33-82133c465248"),
            "stable documents only",
        ),
        (lambda eo: eo.attrib.pop("mimeType"), "mimeType is required"),
    ],
)
def test_metadata_errors(mutate, expected):
    ss, doc, assoc = one_report_submission()
    root = submit_request(ss, [doc], associations=assoc)
    mutate(root.find(".//rim:ExtrinsicObject", NSMAP))
    errors = rejected(root)
    assert any(expected in str(e) for e in errors), [str(e) for e in errors]
    assert all(isinstance(e, XdsRegistryMetadataError | XdsPatientIdDoesNotMatch) for e in errors)


def test_structure_errors():
    ss, doc, _ = one_report_submission()
    # a document that is no member of the submission set
    assert any("not a member" in str(e) for e in rejected(submit_request(ss, [doc])))
    # HasMember without SubmissionSetStatus
    errors = rejected(
        submit_request(ss, [doc], associations=[has_member(ss.entry_uuid, doc.entry_uuid, None)])
    )
    assert any("SubmissionSetStatus" in str(e) for e in errors)
    # an RPLC pointing inside the submission
    errors = rejected(
        submit_request(
            ss,
            [doc],
            associations=[
                has_member(ss.entry_uuid, doc.entry_uuid),
                relation(AssociationType.REPLACE, doc.entry_uuid, ss.entry_uuid),
            ],
        )
    )
    assert any("registered document" in str(e) for e in errors)
    # no submission set at all
    body = submit_request(ss, [doc])
    for package in body.findall(".//rim:RegistryPackage", NSMAP):
        package.getparent().remove(package)
    assert "exactly one SubmissionSet" in str(rejected(body)[0])


def test_all_errors_of_a_submission_are_reported_together():
    ss, doc, assoc = one_report_submission()
    root = submit_request(ss, [replace(doc, patient_id=OTHER_PATIENT)], associations=assoc)
    _slot(root.find(".//rim:ExtrinsicObject", NSMAP), "hash").text = "nope"
    assert {e.code for e in rejected(root)} == {"XDSRegistryMetadataError", "XDSPatientIdDoesNotMatch"}


def _slot(eo, name):
    return eo.find(f"rim:Slot[@name='{name}']/rim:ValueList/rim:Value", NSMAP)


def _remove_scheme(eo, scheme):
    for c in eo.findall(f"rim:Classification[@classificationScheme='{scheme}']", NSMAP):
        eo.remove(c)


def _ext(eo, scheme):
    return eo.find(f"rim:ExternalIdentifier[@identificationScheme='{scheme}']", NSMAP)


def _remove_ext(eo, scheme):
    eo.remove(_ext(eo, scheme))


def test_symbolic_ids_get_uuids_consistently():
    root = adapted_sample()
    submission = decode_submission(copy.deepcopy(root), controller=HOSPITAL, now=NOW)
    again = decode_submission(root, controller=HOSPITAL, now=NOW)
    assert submission.documents[0].entry_uuid != again.documents[0].entry_uuid  # fresh per submission
    member = next(a for a in submission.associations if a.type is AssociationType.HAS_MEMBER)
    assert member.target == submission.documents[0].entry_uuid
