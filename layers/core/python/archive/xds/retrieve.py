"""ITI-43 and RAD-69: request decoding and the RetrieveDocumentSetResponse body.

Both answers are xds-b:RetrieveDocumentSetResponse: an rs:RegistryResponse (status and errors) and
one DocumentResponse per delivered document whose Document element is an xop:Include pointing at
the MTOM part with the bytes (:mod:`archive.xds.mtom` writes the parts).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from lxml import etree

from archive.errors import XdsError, XdsRegistryError
from archive.model.xds_retrieve import (
    DocumentRequest,
    ImagingRetrieveRequest,
    RetrievedDocument,
    SeriesRequest,
    StudyRequest,
)
from archive.xds import ns
from archive.xds.response import registry_error_list, status_for
from archive.xds.xml import text_of

_UID = re.compile(r"(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))+")


def _required(element: etree._Element, local: str, namespace: str = ns.XDSB) -> str:
    value = text_of(element.find(ns.q(namespace, local)))
    if value is None:
        raise XdsRegistryError(f"{local} is required", location=local)
    return value


def _document_request(element: etree._Element) -> DocumentRequest:
    return DocumentRequest(
        repository_unique_id=_required(element, "RepositoryUniqueId"),
        document_unique_id=_required(element, "DocumentUniqueId"),
        home_community_id=text_of(element.find(ns.q(ns.XDSB, "HomeCommunityId"))),
    )


def decode_retrieve_request(body: etree._Element) -> tuple[DocumentRequest, ...]:
    """ITI-43: the body xds-b:RetrieveDocumentSetRequest -> its DocumentRequests (at least one)."""
    if body.tag != ns.q(ns.XDSB, "RetrieveDocumentSetRequest"):
        raise XdsRegistryError(f"expected RetrieveDocumentSetRequest, got {body.tag}")
    requests = tuple(_document_request(d) for d in body.findall(ns.q(ns.XDSB, "DocumentRequest")))
    if not requests:
        raise XdsRegistryError("RetrieveDocumentSetRequest without DocumentRequest")
    return requests


def _uid(element: etree._Element, attribute: str) -> str:
    value = (element.get(attribute) or "").strip()
    if not _UID.fullmatch(value) or len(value) > 64:
        raise XdsRegistryError(f"{attribute} {value!r} is not a DICOM UID", location=attribute)
    return value


def decode_imaging_request(body: etree._Element) -> ImagingRetrieveRequest:
    """RAD-69: the body xdsi-b:RetrieveImagingDocumentSetRequest -> ImagingRetrieveRequest."""
    if body.tag != ns.q(ns.XDSIB, "RetrieveImagingDocumentSetRequest"):
        raise XdsRegistryError(f"expected RetrieveImagingDocumentSetRequest, got {body.tag}")
    studies = []
    for study in body.findall(ns.q(ns.XDSIB, "StudyRequest")):
        series_list = []
        for series in study.findall(ns.q(ns.XDSIB, "SeriesRequest")):
            # The XDS-I.b schema puts DocumentRequest in the RAD namespace (as zeep sends it); many
            # senders (dcm4chee's sample among them) use the ITI one. Both are read.
            documents = tuple(
                _document_request(d)
                for d in series
                if d.tag in (ns.q(ns.XDSIB, "DocumentRequest"), ns.q(ns.XDSB, "DocumentRequest"))
            )
            if not documents:
                raise XdsRegistryError("SeriesRequest without DocumentRequest", location="SeriesRequest")
            series_list.append(SeriesRequest(_uid(series, "seriesInstanceUID"), documents))
        if not series_list:
            raise XdsRegistryError("StudyRequest without SeriesRequest", location="StudyRequest")
        studies.append(StudyRequest(_uid(study, "studyInstanceUID"), tuple(series_list)))
    if not studies:
        raise XdsRegistryError("RetrieveImagingDocumentSetRequest without StudyRequest")
    syntaxes = tuple(
        value
        for value in (
            text_of(uid)
            for uid in body.iterfind(
                f"{ns.q(ns.XDSIB, 'TransferSyntaxUIDList')}/{ns.q(ns.XDSIB, 'TransferSyntaxUID')}"
            )
        )
        if value
    )
    if not syntaxes:
        raise XdsRegistryError("TransferSyntaxUIDList is empty", location="TransferSyntaxUIDList")
    for syntax in syntaxes:
        if not _UID.fullmatch(syntax):
            raise XdsRegistryError(f"transfer syntax {syntax!r} is not a UID", location="TransferSyntaxUID")
    return ImagingRetrieveRequest(tuple(studies), syntaxes)


def retrieve_response(
    documents: Sequence[RetrievedDocument], errors: Sequence[XdsError] = ()
) -> etree._Element:
    """xds-b:RetrieveDocumentSetResponse for ITI-43 and RAD-69 (xop:Include per document)."""
    response = etree.Element(
        ns.q(ns.XDSB, "RetrieveDocumentSetResponse"), nsmap={"xdsb": ns.XDSB, "rs": ns.RS, "xop": ns.XOP}
    )
    registry = etree.SubElement(
        response, ns.q(ns.RS, "RegistryResponse"), status=status_for(errors, delivered=bool(documents))
    )
    registry_error_list(registry, errors)
    for doc in documents:
        item = etree.SubElement(response, ns.q(ns.XDSB, "DocumentResponse"))
        if doc.home_community_id:
            etree.SubElement(item, ns.q(ns.XDSB, "HomeCommunityId")).text = doc.home_community_id
        etree.SubElement(item, ns.q(ns.XDSB, "RepositoryUniqueId")).text = doc.repository_unique_id
        etree.SubElement(item, ns.q(ns.XDSB, "DocumentUniqueId")).text = doc.document_unique_id
        etree.SubElement(item, ns.q(ns.XDSB, "mimeType")).text = doc.mime_type
        include = etree.SubElement(etree.SubElement(item, ns.q(ns.XDSB, "Document")), ns.q(ns.XOP, "Include"))
        include.set("href", f"cid:{doc.content_id}")
    return response
