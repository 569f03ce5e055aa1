"""XDS over HTTP from the outside: an independent SOAP client that zeep builds from the official
WSDLs, the published ITI-42 submission adapted to a local patient, and readers for the answers.

The archive's own codecs are not used here, so a defect they share with the server cannot hide.
"""

from __future__ import annotations

import copy
import email.parser
import email.policy
import hashlib
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import requests
import zeep
from lxml import etree
from zeep.transports import Transport

from tests.support.xds import WSDL, XDS

SOAP = "http://www.w3.org/2003/05/soap-envelope"
WSA = "http://www.w3.org/2005/08/addressing"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
RS = "urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0"
RIM = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"
LCM = "urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0"
XDSB = "urn:ihe:iti:xds-b:2007"

SUCCESS = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"
FAILURE = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Failure"
APPROVED = "('urn:oasis:names:tc:ebxml-regrep:StatusType:Approved')"
APND = "urn:ihe:iti:2007:AssociationType:APND"
HAS_MEMBER = "urn:oasis:names:tc:ebxml-regrep:AssociationType:HasMember"
DE_UNIQUE_ID = "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab"
DE_PATIENT_ID = "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427"
SS_UNIQUE_ID = "urn:uuid:96fdda7c-d067-4183-912e-bf5ee74998a8"
SS_PATIENT_ID = "urn:uuid:6b5aea1a-874d-4603-a4bc-96a0a7b38446"
FOLDER_UNIQUE_ID = "urn:uuid:75df8f67-9973-4fbe-a900-df66cefecc5a"
FOLDER_PATIENT_ID = "urn:uuid:f64ffdf0-4b97-4e06-b79f-a52b38ec2f8a"
FOLDER_CODE_LIST = "urn:uuid:1ba97051-7806-41a8-a48b-8fce7af683c5"
FOLDER_NODE = "urn:uuid:d9d542f3-6cc4-48b6-8870-ea235fbc94c2"
STUDY_UID_REFERENCE = "urn:ihe:iti:xds:2016:studyInstanceUID"

# The stored query ids of ITI TF-2a 3.18.4.1.2.3.7 (written out here, not imported from the archive).
QUERY = {
    "FindDocuments": "urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d",
    "FindSubmissionSets": "urn:uuid:f26abbcb-ac74-4422-8a30-edb644bbc1a9",
    "FindFolders": "urn:uuid:958f3006-baad-4929-a4de-ff1114824431",
    "GetAll": "urn:uuid:10b545ea-725c-446d-9b95-8aeb444eddf3",
    "GetDocuments": "urn:uuid:5c4f972b-d56b-40ac-a5fc-c8ca9b40b9d4",
    "GetFolders": "urn:uuid:5737b14c-8a1a-4539-b659-e03a34a5e1e4",
    "GetAssociations": "urn:uuid:a7ae438b-4bc2-4642-93e9-be891f7bb155",
    "GetDocumentsAndAssociations": "urn:uuid:bab9529a-4a10-40b3-a01f-f68a615d247a",
    "GetSubmissionSets": "urn:uuid:51224314-5390-4169-9b91-b1980040715a",
    "GetSubmissionSetAndContents": "urn:uuid:e8e3cb2c-e39c-46b9-99e4-c12f57260b83",
    "GetFolderAndContents": "urn:uuid:b909a503-523d-4517-8acf-8e5834dfc4c7",
    "GetFoldersForDocument": "urn:uuid:10cae35a-c7f9-4cf5-b61e-fc3278ffb578",
    "GetRelatedDocuments": "urn:uuid:d90e5407-b356-4d91-a89f-873917b4b0e6",
    "FindDocumentsByReferenceId": "urn:uuid:12941a89-e02e-4be5-967c-ce4bfc8fe492",
}

# The codes of the published submission, as a repository would have them configured.
PUBLISHED_CODES = {
    "classCode": ("History and Physical^Connect-a-thon classCodes",),
    "typeCode": ("34108-1^LOINC",),
    "formatCode": ("CDAR2/IHE 1.0^Connect-a-thon formatCodes",),
    "confidentialityCode": ("1.3.6.1.4.1.21367.2006.7.101^Connect-a-thon confidentialityCodes",),
    "healthcareFacilityTypeCode": ("Outpatient^Connect-a-thon healthcareFacilityTypeCodes",),
    "practiceSettingCode": ("General Medicine^Connect-a-thon practiceSettingCodes",),
    "contentTypeCode": ("History and Physical^Connect-a-thon contentTypeCodes",),
}


def q(namespace: str, local: str) -> str:
    return f"{{{namespace}}}{local}"


def new_oid() -> str:
    return f"2.25.{uuid.uuid4().int}"


# --- the published ITI-42 submission, adapted ----------------------------------------------------


def _slot(owner: etree._Element, name: str, *values: str) -> None:
    slot = etree.Element(q(RIM, "Slot"), name=name)
    value_list = etree.SubElement(slot, q(RIM, "ValueList"))
    for value in values:
        etree.SubElement(value_list, q(RIM, "Value")).text = value
    # Slots come first in a RegistryObject (ebRIM 3.0 sequence).
    owner.insert(0, slot)


def _external_id(owner: etree._Element, scheme: str) -> etree._Element:
    for e in owner.iter(q(RIM, "ExternalIdentifier")):
        if e.get("identificationScheme", "").replace(" ", "") == scheme:
            return e
    raise AssertionError(f"no ExternalIdentifier {scheme}")


def published_submission(
    *,
    patient: str,
    repository_unique_id: str,
    study_uid: str,
    append_to: str | None,
    content: bytes = b"<report>no acute findings</report>",
) -> tuple[etree._Element, dict[str, str]]:
    """IPF's ebRS 3.0 SubmitObjectsRequest as published, with what a real registration needs:

    - the patient of this archive (patientId of document and set) instead of the sample's;
    - fresh uniqueIds (the sample's fixed ones would collide with a second run in one registry);
    - the repository attributes ITI-42 adds to ITI-41's (repositoryUniqueId, hash, size) and a
      referenceIdList with the Study Instance UID, so the report is found with the study's manifest;
    - its IsSnapshotOf association (to an on-demand entry that does not exist here) replaced by an
      APND to the study's manifest (``append_to``), or dropped when there is none.

    Returns the request and the uniqueIds given (``document``, ``submission_set``)."""
    root = etree.parse(str(XDS / "ITI-42_SubmitObjectsRequest_ebrs30.xml")).getroot()
    [document] = root.iter(q(RIM, "ExtrinsicObject"))
    [submission_set] = root.iter(q(RIM, "RegistryPackage"))
    ids = {"document": new_oid(), "submission_set": new_oid()}
    _external_id(document, DE_PATIENT_ID).set("value", patient)
    _external_id(document, DE_UNIQUE_ID).set("value", ids["document"])
    _external_id(submission_set, SS_PATIENT_ID).set("value", patient)
    _external_id(submission_set, SS_UNIQUE_ID).set("value", ids["submission_set"])
    _slot(document, "repositoryUniqueId", repository_unique_id)
    _slot(document, "hash", hashlib.sha1(content).hexdigest())  # XDS metadata hashes are SHA-1
    _slot(document, "size", str(len(content)))
    _slot(document, "urn:ihe:iti:xds:2013:referenceIdList", f"{study_uid}^^^^{STUDY_UID_REFERENCE}")
    [snapshot] = [
        a for a in root.iter(q(RIM, "Association")) if a.get("associationType", "").endswith("IsSnapshotOf")
    ]
    if append_to is None:
        snapshot.getparent().remove(snapshot)  # type: ignore[union-attr]
    else:
        snapshot.set("associationType", APND)
        snapshot.set("targetObject", append_to)
    return root, ids


def many_reports_submission(
    *, patient: str, repository_unique_id: str, count: int, in_folder: int
) -> tuple[etree._Element, dict[str, Any]]:
    """The published submission with its document cloned ``count`` times (fresh ids), and a Folder
    holding the first ``in_folder`` of them: for the LeafClass limit and the folder queries."""
    root, ids = published_submission(
        patient=patient, repository_unique_id=repository_unique_id, study_uid=new_oid(), append_to=None
    )
    object_list = root.find(q(RIM, "RegistryObjectList"))
    assert object_list is not None
    [template] = object_list.iter(q(RIM, "ExtrinsicObject"))
    [member] = [
        a for a in object_list.iter(q(RIM, "Association")) if a.get("targetObject") == template.get("id")
    ]
    documents: list[str] = []
    for n in range(count):
        doc = copy.deepcopy(template)
        symbolic = f"Document{n:03d}"
        for e in doc.iter():
            for attribute in ("id", "classifiedObject", "registryObject"):
                if e.get(attribute) == template.get("id"):
                    e.set(attribute, symbolic)
            if e.tag in (q(RIM, "Classification"), q(RIM, "ExternalIdentifier")) and e.get("id"):
                e.set("id", f"{e.get('id')}-{n}")
        _external_id(doc, DE_UNIQUE_ID).set("value", unique_id := new_oid())
        documents.append(unique_id)
        object_list.append(doc)
        association = copy.deepcopy(member)
        association.set("id", f"member-{n}")
        association.set("targetObject", symbolic)
        object_list.append(association)
    object_list.remove(template)
    object_list.remove(member)
    folder = etree.SubElement(object_list, q(RIM, "RegistryPackage"), id="Folder01")
    etree.SubElement(etree.SubElement(folder, q(RIM, "Name")), q(RIM, "LocalizedString"), value="Reports")
    code = etree.SubElement(
        folder,
        q(RIM, "Classification"),
        id="folder-code",
        classificationScheme=FOLDER_CODE_LIST,
        classifiedObject="Folder01",
        nodeRepresentation="History and Physical",
    )
    _slot(code, "codingScheme", "Connect-a-thon classCodes")
    etree.SubElement(
        etree.SubElement(code, q(RIM, "Name")), q(RIM, "LocalizedString"), value="History and Physical"
    )
    folder_uid = new_oid()
    for scheme, value, name in (
        (FOLDER_PATIENT_ID, patient, "XDSFolder.patientId"),
        (FOLDER_UNIQUE_ID, folder_uid, "XDSFolder.uniqueId"),
    ):
        e = etree.SubElement(
            folder,
            q(RIM, "ExternalIdentifier"),
            id=f"folder-{name}",
            registryObject="Folder01",
            identificationScheme=scheme,
            value=value,
        )
        etree.SubElement(etree.SubElement(e, q(RIM, "Name")), q(RIM, "LocalizedString"), value=name)
    etree.SubElement(
        object_list,
        q(RIM, "Classification"),
        id="folder-node",
        classifiedObject="Folder01",
        classificationNode=FOLDER_NODE,
    )
    to_folder = etree.SubElement(
        object_list,
        q(RIM, "Association"),
        id="set-folder",
        associationType=HAS_MEMBER,
        sourceObject="SubmissionSet01",
        targetObject="Folder01",
    )
    _slot(to_folder, "SubmissionSetStatus", "Original")
    for n in range(in_folder):
        etree.SubElement(
            object_list,
            q(RIM, "Association"),
            id=f"folder-member-{n}",
            associationType=HAS_MEMBER,
            sourceObject="Folder01",
            targetObject=f"Document{n:03d}",
        )
    return root, {**ids, "documents": documents, "folder": folder_uid}


# --- the independent client ----------------------------------------------------------------------


class ZeepXdsClient:
    """ITI-18, ITI-43 and RAD-69 requests as zeep builds them from the official WSDLs (WS-Addressing
    from the WSDLs' wsaw:Action), posted to the local endpoints; the XUA assertion goes in as a
    wsse:Security header element. Answers come back raw: zeep cannot read ebRIM (see
    docs/conformance-xds.md), so callers validate them with lxml against the schema."""

    def __init__(self, base_url: str) -> None:
        settings = zeep.Settings(raw_response=True, strict=False)
        transport = Transport(timeout=120, operation_timeout=600)
        self._iti18 = zeep.Client(str(WSDL / "iti18.wsdl"), settings=settings, transport=transport)
        self._iti43 = zeep.Client(str(WSDL / "iti43.wsdl"), settings=settings, transport=transport)
        self._rad69 = zeep.Client(str(WSDL / "rad69.wsdl"), settings=settings, transport=transport)
        self.registry = self._iti18.create_service(
            f"{{{XDSB}}}DocumentRegistry_Binding_Soap12", f"{base_url}/xds/registry"
        )
        self.repository = self._iti43.create_service(
            f"{{{XDSB}}}DocumentRepository_Binding_Soap12", f"{base_url}/xds/repository"
        )
        self.imaging = self._rad69.create_service(
            "{urn:ihe:rad:xdsi-b:2009}DocumentRepository_Binding_Soap12", f"{base_url}/xds/imaging"
        )

    @staticmethod
    def _security(assertion: etree._Element) -> etree._Element:
        security = etree.Element(q(WSSE, "Security"), nsmap={"wsse": WSSE})
        security.append(copy.deepcopy(assertion))
        return security

    def stored_query(
        self,
        name: str,
        slots: Sequence[tuple[str, Sequence[str]]],
        *,
        assertion: etree._Element,
        return_type: str = "LeafClass",
    ) -> requests.Response:
        rim = self._iti18.type_factory(RIM)
        query = self._iti18.type_factory("urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0")
        return self.registry.DocumentRegistry_RegistryStoredQuery(  # type: ignore[no-any-return]
            ResponseOption=query.ResponseOptionType(returnType=return_type, returnComposedObjects=True),
            AdhocQuery=rim.AdhocQueryType(
                id=QUERY[name],
                Slot=[
                    rim.SlotType1(
                        name=n, ValueList=rim.ValueListType(_value_1=[{"Value": v} for v in values])
                    )
                    for n, values in slots
                ],
            ),
            _soapheaders=[self._security(assertion)],
        )

    def retrieve_documents(
        self, documents: Iterable[tuple[str, str]], *, assertion: etree._Element
    ) -> requests.Response:
        """ITI-43 for (repositoryUniqueId, documentUniqueId) pairs."""
        return self.repository.DocumentRepository_RetrieveDocumentSet(  # type: ignore[no-any-return]
            DocumentRequest=[{"RepositoryUniqueId": r, "DocumentUniqueId": d} for r, d in documents],
            _soapheaders=[self._security(assertion)],
        )

    def retrieve_images(
        self,
        study_uid: str,
        series: dict[str, Sequence[str]],
        *,
        repository_unique_id: str,
        syntaxes: Sequence[str],
        assertion: etree._Element,
    ) -> requests.Response:
        """RAD-69 for the SOP instances of each series of one study, in the listed syntaxes."""
        return self.imaging.DocumentRepository_RetrieveImagingDocumentSet(  # type: ignore[no-any-return]
            StudyRequest=[
                {
                    "studyInstanceUID": study_uid,
                    "SeriesRequest": [
                        {
                            "seriesInstanceUID": series_uid,
                            "DocumentRequest": [
                                {"RepositoryUniqueId": repository_unique_id, "DocumentUniqueId": sop}
                                for sop in sops
                            ],
                        }
                        for series_uid, sops in series.items()
                    ],
                }
            ],
            TransferSyntaxUIDList={"TransferSyntaxUID": list(syntaxes)},
            _soapheaders=[self._security(assertion)],
        )


# --- reading answers -----------------------------------------------------------------------------


def soap_body(content: bytes) -> etree._Element:
    body = etree.fromstring(content).find(q(SOAP, "Body"))
    assert body is not None
    return body[0]


def mime_parts(response: requests.Response) -> list[tuple[str, bytes]]:
    """The parts of a multipart/related (MTOM) answer, read with Python's MIME parser."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + response.headers["Content-Type"].encode() + b"\r\n\r\n" + response.content
    )
    assert message.is_multipart(), response.headers["Content-Type"]
    return [(p.get_content_type(), p.get_payload(decode=True)) for p in message.iter_parts()]


def unique_ids(body: etree._Element) -> dict[str, str]:
    """uniqueId -> entryUUID of every DocumentEntry, SubmissionSet and Folder of a LeafClass answer."""
    out = {}
    for e in body.iter(q(RIM, "ExternalIdentifier")):
        if e.get("identificationScheme") in (DE_UNIQUE_ID, SS_UNIQUE_ID, FOLDER_UNIQUE_ID):
            out[e.get("value", "")] = e.get("registryObject", "")
    return out


def object_refs(body: etree._Element) -> set[str]:
    return {e.get("id", "") for e in body.iter(q(RIM, "ObjectRef"))}


def associations(body: etree._Element) -> list[tuple[str, str, str]]:
    """(type, source, target) of every Association of an answer."""
    return [
        (a.get("associationType", ""), a.get("sourceObject", ""), a.get("targetObject", ""))
        for a in body.iter(q(RIM, "Association"))
    ]


def error_codes(body: etree._Element) -> list[str]:
    return [e.get("errorCode", "") for e in body.iter(q(RS, "RegistryError"))]
