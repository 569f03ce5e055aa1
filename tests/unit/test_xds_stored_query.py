"""ITI-18 AdhocQueryRequest decoding: every stored query and parameter of ITI TF-2a 3.18.4.1.2.3.7,
the value syntax, AND/OR code lists, and the errors of ITI TF-3 4.2.4. The public Swiss EPR request
and a request that zeep builds from the official WSDL decode too."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import zeep
from archive.errors import XdsRegistryError, XdsStoredQueryParamNumber, XdsUnknownStoredQuery
from archive.model.xds import AssociationType, DocumentEntryType, EntryStatus
from archive.model.xds_query import (
    STABLE_ONLY,
    CodeKey,
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
    TimeRange,
)
from archive.xds import ns
from archive.xds.soap import read_request
from archive.xds.stored_query import PARAMETERS, StoredQueryId, decode_query_request, split_values
from lxml import etree

from tests.support.xds import WSDL, XDS

APPROVED = "('urn:oasis:names:tc:ebxml-regrep:StatusType:Approved')"
PID = "'020516C903K^^^&1.2.246.21&ISO'"


def request(
    query_id: StoredQueryId | str, slots: list[tuple[str, list[str]]], return_type: str = "LeafClass"
) -> etree._Element:
    body = etree.Element(ns.q(ns.QUERY, "AdhocQueryRequest"), nsmap={"query": ns.QUERY, "rim": ns.RIM})
    etree.SubElement(
        body, ns.q(ns.QUERY, "ResponseOption"), returnType=return_type, returnComposedObjects="true"
    )
    query = etree.SubElement(body, ns.q(ns.RIM, "AdhocQuery"), id=str(query_id))
    for name, values in slots:
        value_list = etree.SubElement(
            etree.SubElement(query, ns.q(ns.RIM, "Slot"), name=name), ns.q(ns.RIM, "ValueList")
        )
        for value in values:
            etree.SubElement(value_list, ns.q(ns.RIM, "Value")).text = value
    return body


def test_value_syntax():
    assert split_values("'a'", "$p") == ["a"]
    assert split_values("('a', 'b','c')", "$p") == ["a", "b", "c"]
    assert split_values("('it''s')", "$p") == ["it's"]
    assert split_values("200412252300", "$p") == ["200412252300"]
    assert split_values("('a^^b,c')", "$p") == ["a^^b,c"]
    for bad in ("('a'", "'a", "('a' 'b')", "(,)"):
        with pytest.raises(XdsRegistryError):
            split_values(bad, "$p")


def test_public_iti18_request_decodes():
    body = read_request((XDS / "ITI-18_request_raw.xml").read_bytes()).body
    decoded = decode_query_request(body)
    assert decoded.return_type is ReturnType.OBJECT_REF
    assert decoded.return_composed_objects
    assert decoded.query == FindDocuments(
        patient_id="7e1c6e78-58f1-4a43-ae88-0d5a5c4ab43e^^^&1.3.6.1.4.1.21367.2017.2.5.45&ISO",
        statuses=frozenset({EntryStatus.APPROVED}),
    )


def test_find_documents_with_every_parameter():
    p = "$XDSDocumentEntry"
    decoded = decode_query_request(
        request(
            StoredQueryId.FIND_DOCUMENTS,
            [
                (p + "PatientId", [PID]),
                (p + "Status", [APPROVED, "('urn:oasis:names:tc:ebxml-regrep:StatusType:Deprecated')"]),
                (p + "ClassCode", ["('18748-4^^2.16.840.1.113883.6.1','11488-4^^2.16.840.1.113883.6.1')"]),
                (p + "TypeCode", ["('18782-3^^2.16.840.1.113883.6.1')"]),
                (p + "PracticeSettingCode", ["('394914008^^2.16.840.1.113883.6.96')"]),
                (p + "HealthcareFacilityTypeCode", ["('22232009^^2.16.840.1.113883.6.96')"]),
                (p + "FormatCode", ["('1.2.840.10008.5.1.4.1.1.88.59^^1.2.840.10008.2.6.1')"]),
                (p + "CreationTimeFrom", ["2004"]),
                (p + "CreationTimeTo", ["20050101120000"]),
                (p + "ServiceStartTimeFrom", ["200412"]),
                (p + "ServiceStartTimeTo", ["20041231"]),
                (p + "ServiceStopTimeFrom", ["2004123123"]),
                (p + "ServiceStopTimeTo", ["200501010000"]),
                (p + "AuthorPerson", ["('%Radiologist%', 'Dr _ House')"]),
                (
                    p + "Type",
                    [
                        "('urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1','urn:uuid:34268e47-fdf5-41a6-ba33-82133c465248')"
                    ],
                ),
                ("$MetadataLevel", ["1"]),
            ],
        )
    )
    q = decoded.query
    assert isinstance(q, FindDocuments) and not isinstance(q, FindDocumentsByReferenceId)
    assert q.statuses == {EntryStatus.APPROVED, EntryStatus.DEPRECATED}
    assert q.class_codes == (
        frozenset({CodeKey("18748-4", "2.16.840.1.113883.6.1"), CodeKey("11488-4", "2.16.840.1.113883.6.1")}),
    )
    assert q.format_codes == (frozenset({CodeKey("1.2.840.10008.5.1.4.1.1.88.59", "1.2.840.10008.2.6.1")}),)
    assert q.creation_time == TimeRange(
        datetime(2004, 1, 1, tzinfo=UTC), datetime(2005, 1, 1, 12, tzinfo=UTC)
    )
    assert q.service_start_time == TimeRange(
        datetime(2004, 12, 1, tzinfo=UTC), datetime(2004, 12, 31, tzinfo=UTC)
    )
    assert q.service_stop_time.start == datetime(2004, 12, 31, 23, tzinfo=UTC)
    assert q.author_persons == ("%Radiologist%", "Dr _ House")
    assert q.entry_types == {DocumentEntryType.STABLE, DocumentEntryType.ON_DEMAND}
    assert decoded.metadata_level == 1


def test_event_and_confidentiality_codes_have_and_or_semantics():
    p = "$XDSDocumentEntry"
    q = decode_query_request(
        request(
            StoredQueryId.FIND_DOCUMENTS,
            [
                (p + "PatientId", [PID]),
                (p + "Status", [APPROVED]),
                # Two Value elements of one Slot: one OR group; a second Slot: AND.
                (p + "EventCodeList", ["('CT^^1.2.840.10008.2.16.4')", "('MR^^1.2.840.10008.2.16.4')"]),
                (p + "EventCodeList", ["('T-A0100^^SRT')"]),
                (p + "ConfidentialityCode", ["('N^^2.16.840.1.113883.5.25')"]),
            ],
        )
    ).query
    assert isinstance(q, FindDocuments)
    assert q.event_codes == (
        frozenset({CodeKey("CT", "1.2.840.10008.2.16.4"), CodeKey("MR", "1.2.840.10008.2.16.4")}),
        frozenset({CodeKey("T-A0100", "SRT")}),
    )
    assert q.confidentiality_codes == (frozenset({CodeKey("N", "2.16.840.1.113883.5.25")}),)
    assert q.entry_types == STABLE_ONLY


def test_every_stored_query_decodes_into_its_type():
    uuid1, uuid2 = (
        "urn:uuid:11111111-1111-4111-8111-111111111111",
        "urn:uuid:22222222-2222-4222-8222-222222222222",
    )
    cases = {
        StoredQueryId.FIND_DOCUMENTS_BY_REFERENCE_ID: (
            [
                ("$XDSDocumentEntryPatientId", [PID]),
                ("$XDSDocumentEntryStatus", [APPROVED]),
                ("$XDSDocumentEntryReferenceIdList", ["('1.2.3^^^^urn:ihe:iti:xds:2016:studyInstanceUID')"]),
            ],
            lambda q: (
                isinstance(q, FindDocumentsByReferenceId)
                and q.reference_ids == ("1.2.3^^^^urn:ihe:iti:xds:2016:studyInstanceUID",)
            ),
        ),
        StoredQueryId.FIND_SUBMISSION_SETS: (
            [
                ("$XDSSubmissionSetPatientId", [PID]),
                ("$XDSSubmissionSetStatus", [APPROVED]),
                ("$XDSSubmissionSetSourceId", ["('1.2.3','1.2.4')"]),
                ("$XDSSubmissionSetSubmissionTimeFrom", ["20240101"]),
                ("$XDSSubmissionSetSubmissionTimeTo", ["20250101"]),
                ("$XDSSubmissionSetAuthorPerson", ["'%Sam%'"]),
                ("$XDSSubmissionSetContentType", ["('18748-4^^2.16.840.1.113883.6.1')"]),
            ],
            lambda q: (
                isinstance(q, FindSubmissionSets)
                and q.source_ids == ("1.2.3", "1.2.4")
                and q.author_person == "%Sam%"
                and q.submission_time.end == datetime(2025, 1, 1, tzinfo=UTC)
            ),
        ),
        StoredQueryId.FIND_FOLDERS: (
            [
                ("$XDSFolderPatientId", [PID]),
                ("$XDSFolderStatus", [APPROVED]),
                ("$XDSFolderLastUpdateTimeFrom", ["2024"]),
                ("$XDSFolderCodeList", ["('CT^^1.2.840.10008.2.16.4')"]),
                ("$XDSFolderCodeList", ["('MR^^1.2.840.10008.2.16.4')"]),
            ],
            lambda q: isinstance(q, FindFolders) and len(q.codes) == 2,
        ),
        StoredQueryId.GET_ALL: (
            [
                ("$patientId", [PID]),
                ("$XDSDocumentEntryStatus", [APPROVED]),
                ("$XDSSubmissionSetStatus", [APPROVED]),
                ("$XDSFolderStatus", [APPROVED]),
                ("$XDSDocumentEntryFormatCode", ["('f^^s')"]),
                ("$XDSDocumentEntryConfidentialityCode", ["('N^^c')"]),
            ],
            lambda q: isinstance(q, GetAll) and q.format_codes == (frozenset({CodeKey("f", "s")}),),
        ),
        StoredQueryId.GET_DOCUMENTS: (
            [
                ("$XDSDocumentEntryEntryUUID", [f"('{uuid1}','{uuid2}')"]),
                ("$homeCommunityId", ["'urn:oid:1.2.3'"]),
            ],
            lambda q: isinstance(q, GetDocuments) and q.uuids == (uuid1, uuid2),
        ),
        StoredQueryId.GET_FOLDERS: (
            [("$XDSFolderUniqueId", ["('1.2.3')"])],
            lambda q: isinstance(q, GetFolders) and q.unique_ids == ("1.2.3",),
        ),
        StoredQueryId.GET_ASSOCIATIONS: (
            [("$uuid", [f"('{uuid1}')"])],
            lambda q: isinstance(q, GetAssociations) and q.uuids == (uuid1,),
        ),
        StoredQueryId.GET_DOCUMENTS_AND_ASSOCIATIONS: (
            [("$XDSDocumentEntryUniqueId", ["('1.2.3')"])],
            lambda q: isinstance(q, GetDocumentsAndAssociations) and q.unique_ids == ("1.2.3",),
        ),
        StoredQueryId.GET_SUBMISSION_SETS: (
            [("$uuid", [f"('{uuid1}')"])],
            lambda q: isinstance(q, GetSubmissionSets) and q.uuids == (uuid1,),
        ),
        StoredQueryId.GET_SUBMISSION_SET_AND_CONTENTS: (
            [
                ("$XDSSubmissionSetEntryUUID", [f"'{uuid1}'"]),
                ("$XDSDocumentEntryType", [f"('{DocumentEntryType.ON_DEMAND}')"]),
            ],
            lambda q: (
                isinstance(q, GetSubmissionSetAndContents)
                and q.uuid == uuid1
                and q.entry_types == {DocumentEntryType.ON_DEMAND}
            ),
        ),
        StoredQueryId.GET_FOLDER_AND_CONTENTS: (
            [("$XDSFolderUniqueId", ["'1.2.3'"])],
            lambda q: isinstance(q, GetFolderAndContents) and q.unique_id == "1.2.3" and q.uuid is None,
        ),
        StoredQueryId.GET_FOLDERS_FOR_DOCUMENT: (
            [("$XDSDocumentEntryUniqueId", ["'1.2.3'"])],
            lambda q: isinstance(q, GetFoldersForDocument) and q.unique_id == "1.2.3",
        ),
        StoredQueryId.GET_RELATED_DOCUMENTS: (
            [
                ("$XDSDocumentEntryEntryUUID", [f"'{uuid1}'"]),
                ("$AssociationTypes", [f"('{AssociationType.REPLACE}','{AssociationType.APPEND}')"]),
            ],
            lambda q: (
                isinstance(q, GetRelatedDocuments)
                and q.association_types == {AssociationType.REPLACE, AssociationType.APPEND}
            ),
        ),
    }
    assert set(cases) | {StoredQueryId.FIND_DOCUMENTS} == set(StoredQueryId)
    for query_id, (slots, check) in cases.items():
        decoded = decode_query_request(request(query_id, slots))
        assert check(decoded.query), query_id


def test_unknown_stored_query():
    with pytest.raises(XdsUnknownStoredQuery):
        decode_query_request(request("urn:uuid:00000000-0000-4000-8000-000000000000", []))


@pytest.mark.parametrize(
    ("query_id", "slots"),
    [
        # required parameter missing
        (StoredQueryId.FIND_DOCUMENTS, [("$XDSDocumentEntryStatus", [APPROVED])]),
        (StoredQueryId.FIND_DOCUMENTS, [("$XDSDocumentEntryPatientId", [PID])]),
        (StoredQueryId.GET_RELATED_DOCUMENTS, [("$XDSDocumentEntryUniqueId", ["'1.2'"])]),
        # single-valued parameter with several values
        (
            StoredQueryId.FIND_DOCUMENTS,
            [
                ("$XDSDocumentEntryPatientId", ["('a^^^&1.2&ISO','b^^^&1.2&ISO')"]),
                ("$XDSDocumentEntryStatus", [APPROVED]),
            ],
        ),
        (
            StoredQueryId.FIND_DOCUMENTS,
            [
                ("$XDSDocumentEntryPatientId", [PID]),
                ("$XDSDocumentEntryStatus", [APPROVED]),
                ("$XDSDocumentEntryCreationTimeFrom", ["2004", "2005"]),
            ],
        ),
        # a parameter without AND/OR semantics in two slots
        (
            StoredQueryId.FIND_DOCUMENTS,
            [
                ("$XDSDocumentEntryPatientId", [PID]),
                ("$XDSDocumentEntryStatus", [APPROVED]),
                ("$XDSDocumentEntryStatus", [APPROVED]),
            ],
        ),
        # exclusive parameters: both, or neither
        (
            StoredQueryId.GET_DOCUMENTS,
            [("$XDSDocumentEntryEntryUUID", ["('urn:uuid:1')"]), ("$XDSDocumentEntryUniqueId", ["('1.2')"])],
        ),
        (StoredQueryId.GET_DOCUMENTS, [("$homeCommunityId", ["'urn:oid:1.2'"])]),
        (StoredQueryId.GET_SUBMISSION_SET_AND_CONTENTS, []),
    ],
)
def test_parameter_number_errors(query_id, slots):
    with pytest.raises(XdsStoredQueryParamNumber):
        decode_query_request(request(query_id, slots))


@pytest.mark.parametrize(
    "slots",
    [
        [("$XDSDocumentEntryStatus", ["('Approved')"])],  # not a status URN
        [("$XDSDocumentEntryStatus", [APPROVED]), ("$XDSDocumentEntryCreationTimeFrom", ["2004-12-25"])],
        [
            ("$XDSDocumentEntryStatus", [APPROVED]),
            ("$XDSDocumentEntryCreationTimeFrom", ["20041225230000+0200"]),
        ],
        [("$XDSDocumentEntryStatus", [APPROVED]), ("$XDSDocumentEntryClassCode", ["('18748-4')"])],
        [("$XDSDocumentEntryStatus", [APPROVED]), ("$XDSDocumentEntryType", ["('urn:uuid:nope')"])],
        [("$XDSDocumentEntryStatus", [APPROVED]), ("$XDSDocumentEntryPatientld", [PID])],  # misspelt
        [("$XDSDocumentEntryStatus", [APPROVED]), ("$MetadataLevel", ["3"])],
    ],
)
def test_malformed_values_are_registry_errors(slots):
    with pytest.raises(XdsRegistryError) as caught:
        decode_query_request(
            request(StoredQueryId.FIND_DOCUMENTS, [("$XDSDocumentEntryPatientId", [PID]), *slots])
        )
    assert caught.value.code == "XDSRegistryError"
    assert caught.value.location


def test_return_type_must_be_leafclass_or_objectref():
    slots = [("$XDSDocumentEntryPatientId", [PID]), ("$XDSDocumentEntryStatus", [APPROVED])]
    assert (
        decode_query_request(request(StoredQueryId.FIND_DOCUMENTS, slots, "ObjectRef")).return_type
        is ReturnType.OBJECT_REF
    )
    with pytest.raises(XdsRegistryError):
        decode_query_request(request(StoredQueryId.FIND_DOCUMENTS, slots, "RegistryObject"))


def test_every_query_has_its_parameter_table():
    assert set(PARAMETERS) == set(StoredQueryId)
    assert "$XDSDocumentEntryEventCodeList" in PARAMETERS[StoredQueryId.FIND_DOCUMENTS]
    assert "$XDSDocumentEntryReferenceIdList" in PARAMETERS[StoredQueryId.FIND_DOCUMENTS_BY_REFERENCE_ID]


def test_zeep_find_documents_request_from_the_official_wsdl_decodes():
    # Given an independent SOAP client built from the IHE WSDL (no network: the message is only built)
    client = zeep.Client(str(WSDL / "iti18.wsdl"))
    rim = client.type_factory("urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0")
    query = client.type_factory("urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0")

    def slot(name: str, *values: str):
        return rim.SlotType1(name=name, ValueList=rim.ValueListType(_value_1=[{"Value": v} for v in values]))

    envelope = client.create_message(
        client.service,
        "DocumentRegistry_RegistryStoredQuery",
        ResponseOption=query.ResponseOptionType(returnType="LeafClass", returnComposedObjects=True),
        AdhocQuery=rim.AdhocQueryType(
            id=StoredQueryId.FIND_DOCUMENTS.value,
            Slot=[
                slot("$XDSDocumentEntryPatientId", PID),
                slot("$XDSDocumentEntryStatus", APPROVED),
                slot("$XDSDocumentEntryClassCode", "('18748-4^^2.16.840.1.113883.6.1')"),
                slot("$XDSDocumentEntryEventCodeList", "('CT^^1.2.840.10008.2.16.4')"),
                slot("$XDSDocumentEntryEventCodeList", "('T-A0100^^SRT')"),
            ],
        ),
    )
    # When its bytes go through our SOAP reader and query decoder
    soap_request = read_request(etree.tostring(envelope))
    decoded = decode_query_request(soap_request.body)
    # Then zeep's WS-Addressing headers and every parameter come through
    assert soap_request.action == ns.ACTION_ITI18 and soap_request.message_id.startswith("urn:uuid:")
    q = decoded.query
    assert isinstance(q, FindDocuments)
    assert q.patient_id == "020516C903K^^^&1.2.246.21&ISO"
    assert q.class_codes == (frozenset({CodeKey("18748-4", "2.16.840.1.113883.6.1")}),)
    assert len(q.event_codes) == 2
    assert decoded.return_type is ReturnType.LEAF_CLASS
