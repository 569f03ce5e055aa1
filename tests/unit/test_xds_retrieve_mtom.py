"""ITI-43 and RAD-69: request decoding (the public vectors, zeep-built requests), the response body
against the schema, and MTOM/XOP: the streaming writer checked with Python's MIME parser and our
reader, memory staying flat for a large answer, and the reader's limits."""

from __future__ import annotations

import email
import email.policy
import io
import re
import tracemalloc
from collections.abc import Iterator

import pytest
import zeep
from archive.errors import MalformedXml, XdsRegistryError, XmlTooLarge
from archive.model.xds_retrieve import DocumentRequest, RetrievedDocument
from archive.xds import ns
from archive.xds.mtom import Attachment, MtomLimits, new_content_id, read_message, write_mtom
from archive.xds.retrieve import decode_imaging_request, decode_retrieve_request, retrieve_response
from archive.xds.soap import envelope, read_request, request_from_envelope, serialize
from archive.xds.xml import XmlLimits
from lxml import etree

from tests.support.xds import TESTDATA, WSDL, XDS, assert_valid, inline_xop


def rad69_vector() -> tuple[str, bytes]:
    """Content-Type and body of the published RAD-69 request (a curl command line).

    The published text has LF line ends; on the wire MIME has CRLF, so they are restored.
    """
    text = (TESTDATA / "rad69" / "rad69-request.txt").read_text()
    content_type = re.search(r"-H 'Content-Type: ([^']*)'", text).group(1)  # type: ignore[union-attr]
    body = text.split("--data-binary '", 1)[1].rsplit("'", 1)[0]
    return content_type, body.replace("\r\n", "\n").replace("\n", "\r\n").encode()


def test_public_rad69_mtom_request_reads_and_decodes():
    content_type, body = rad69_vector()
    message = read_message(io.BytesIO(body), content_type)
    request = request_from_envelope(message.root)
    assert request.action == ns.ACTION_RAD69
    assert request.message_id == "urn:uuid:3FC3AA9541DB19A2CA1509719154150"
    decoded = decode_imaging_request(request.body)
    assert decoded.transfer_syntaxes == ("1.2.840.10008.1.2",)
    [(study, series, doc)] = decoded.documents()
    assert study == "1.3.12.2.1107.5.8.1.12345678.199508041416590859569"
    assert series == "1.3.12.2.1107.5.8.1.12345678.199508041416590860429"
    assert doc == DocumentRequest(
        "1.3.6.1.4.1.21367.13.80.110", "1.3.12.2.1107.5.8.1.12345678.199508041416590861483"
    )


def test_public_iti43_request_decodes():
    request = read_request((XDS / "ITI-43_request_raw.xml").read_bytes())
    assert request.action == ns.ACTION_ITI43
    assert decode_retrieve_request(request.body) == (
        DocumentRequest(
            "1.3.6.1.4.1.21367.2017.2.3.54",
            "1.3.6.1.4.1.21367.2017.2.1.75.20200922130227623",
            "urn:oid:1.3.6.1.4.1.21367.2017.2.6.19",
        ),
    )


def test_zeep_requests_from_the_official_wsdls_decode():
    iti43 = zeep.Client(str(WSDL / "iti43.wsdl"))
    message = iti43.create_message(
        iti43.service,
        "DocumentRepository_RetrieveDocumentSet",
        DocumentRequest=[{"RepositoryUniqueId": "1.2.3", "DocumentUniqueId": "1.2.3.4"}],
    )
    assert decode_retrieve_request(read_request(etree.tostring(message)).body) == (
        DocumentRequest("1.2.3", "1.2.3.4"),
    )
    rad69 = zeep.Client(str(WSDL / "rad69.wsdl"))
    message = rad69.create_message(
        rad69.service,
        "DocumentRepository_RetrieveImagingDocumentSet",
        StudyRequest=[
            {
                "studyInstanceUID": "1.2.3",
                "SeriesRequest": [
                    {
                        "seriesInstanceUID": "1.2.3.1",
                        "DocumentRequest": [{"RepositoryUniqueId": "1.9", "DocumentUniqueId": "1.2.3.1.1"}],
                    }
                ],
            }
        ],
        TransferSyntaxUIDList={"TransferSyntaxUID": ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"]},
    )
    soap = read_request(etree.tostring(message))
    assert soap.action == ns.ACTION_RAD69
    decoded = decode_imaging_request(soap.body)
    assert decoded.transfer_syntaxes == ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")
    assert decoded.documents()[0][2].document_unique_id == "1.2.3.1.1"
    # The registration WSDL loads too (ITI-42 is decoded from lcm:SubmitObjectsRequest).
    assert zeep.Client(str(WSDL / "iti42.wsdl")).service is not None


def test_bad_rad69_requests():
    _, body = rad69_vector()
    good = read_message(io.BytesIO(body), rad69_vector()[0]).root
    request = request_from_envelope(good).body
    for mutate in (
        lambda r: r.find(f"{{{ns.XDSIB}}}StudyRequest").set("studyInstanceUID", "1.2.abc"),
        lambda r: r.remove(r.find(f"{{{ns.XDSIB}}}TransferSyntaxUIDList")),
        lambda r: [
            s.getparent().remove(s)
            for s in list(r.iter(f"{{{ns.XDSB}}}DocumentRequest", f"{{{ns.XDSIB}}}DocumentRequest"))
        ],
    ):
        broken = etree.fromstring(etree.tostring(request))
        mutate(broken)
        with pytest.raises(XdsRegistryError):
            decode_imaging_request(broken)


def parts_of(content_type: str, body: bytes) -> list[email.message.EmailMessage]:
    message = email.message_from_bytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body, policy=email.policy.HTTP
    )
    assert message.get_content_type() == "multipart/related"
    return list(message.iter_parts())  # type: ignore[attr-defined]


def test_mtom_writer_output_parses_with_a_mime_parser_part_for_part():
    # Given three DICOM-sized payloads and a RAD-69 answer referencing them
    payloads = [bytes(range(256)) * 1000, b"\r\n--not-a-boundary\r\n" * 50, b""]
    docs = [RetrievedDocument("1.9", f"1.2.3.{i}", "application/dicom", new_content_id(i)) for i in range(3)]
    body = retrieve_response(docs)
    env = serialize(envelope(body, action=ns.ACTION_RAD69_RESPONSE, relates_to="urn:uuid:1"))
    attachments = [
        Attachment(d.content_id, lambda p=p: io.BytesIO(p)) for d, p in zip(docs, payloads, strict=True)
    ]
    # When the message is written
    response = write_mtom(env, attachments, action=ns.ACTION_RAD69_RESPONSE, block_size=4096)
    raw = b"".join(response.body)
    # Then a MIME parser sees the envelope as root and each payload byte for byte
    root, *binary = parts_of(response.content_type, raw)
    assert root.get_content_type() == "application/xop+xml"
    assert root["Content-ID"].strip("<>") in response.content_type
    assert [p.get_payload(decode=True) for p in binary] == payloads
    assert [p["Content-ID"].strip("<>") for p in binary] == [d.content_id for d in docs]
    assert all(p.get_content_type() == "application/dicom" for p in binary)
    # And the body, with each xop:Include replaced by its part, is valid XDS.b
    parsed = request_from_envelope(etree.fromstring(root.get_payload(decode=True)))
    assert_valid(inline_xop(parsed.body, {d.content_id: p for d, p in zip(docs, payloads, strict=True)}))
    # And our own reader reads it back
    message = read_message(io.BytesIO(raw), response.content_type)
    includes = list(message.root.iter(ns.q(ns.XOP, "Include")))
    assert [message.attachment(i).read() for i in includes] == payloads
    message.close()


def test_retrieve_response_with_errors_is_partial_success_and_valid():
    from archive.errors import WadoTransferSyntaxUnavailable, XdsDocumentUniqueIdError

    docs = [RetrievedDocument("1.9", "1.2.3.1", "application/dicom", "a@x")]
    body = retrieve_response(
        docs,
        [
            WadoTransferSyntaxUnavailable("no JPEG 2000", location="1.2.3.2"),
            XdsDocumentUniqueIdError("unknown", location="1.2.3.3"),
        ],
    )
    assert_valid(inline_xop(body, {"a@x": b"DICM"}))
    status = body.find(f"{{{ns.RS}}}RegistryResponse").get("status")
    assert status == ns.STATUS_PARTIAL_SUCCESS
    codes = [e.get("errorCode") for e in body.iter(f"{{{ns.RS}}}RegistryError")]
    assert codes == ["urn:dicom:wado:0007", "XDSDocumentUniqueIdError"]
    nothing = retrieve_response([], [XdsDocumentUniqueIdError("unknown")])
    assert nothing.find(f"{{{ns.RS}}}RegistryResponse").get("status") == ns.STATUS_FAILURE


class Zeros(io.RawIOBase):
    """``size`` bytes produced on demand, never held at once; counts close()."""

    closed_count = 0

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        self.left -= n
        return b"\0" * n

    def close(self) -> None:
        Zeros.closed_count += 1
        super().close()


def test_mtom_writer_streams_a_large_answer_with_flat_memory():
    # Given 64 parts of 4 MiB (256 MiB in all), each opened only when its turn comes
    opened: list[int] = []

    def opener(i: int):
        def open_part():
            opened.append(i)
            return Zeros(4 * 1024 * 1024)

        return open_part

    attachments = (Attachment(new_content_id(i), opener(i)) for i in range(64))
    response = write_mtom(b"<e/>", attachments)
    # When the body is consumed block by block, as an HTTP server sends it
    Zeros.closed_count = 0
    tracemalloc.start()
    total = 0
    body: Iterator[bytes] = response.body
    first = next(body)
    assert opened == []  # nothing opened before its part is due
    total += len(first)
    for block in body:
        total += len(block)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # Then everything went through, each source was opened in turn and closed, and the peak
    # memory stayed at a few blocks, not the size of the answer
    assert total > 256 * 1024 * 1024
    assert opened == list(range(64)) and Zeros.closed_count == 64
    assert peak < 4 * 1024 * 1024, peak


def test_mtom_reader_limits_and_malformed_messages():
    content_type, body = rad69_vector()
    small = MtomLimits(xml=XmlLimits(max_bytes=256))
    with pytest.raises(XmlTooLarge):
        read_message(io.BytesIO(body), content_type, small)
    with pytest.raises(XmlTooLarge):
        read_message(io.BytesIO(body), content_type, MtomLimits(max_total_bytes=512))
    with pytest.raises(MalformedXml):
        read_message(io.BytesIO(body[: len(body) // 2]), content_type)
    with pytest.raises(MalformedXml):
        read_message(io.BytesIO(body), 'multipart/related; type="application/xop+xml"')
    # A plain SOAP body is read as XML with the same hardening
    assert read_message(
        io.BytesIO((XDS / "ITI-43_request_raw.xml").read_bytes()), "application/soap+xml"
    ).root.tag.endswith("Envelope")


def test_mtom_reader_refuses_an_oversized_attachment_and_keeps_nothing():
    boundary = "b0undary"
    part = b"\0" * (3 * 1024 * 1024)
    raw = (
        (
            f"--{boundary}\r\nContent-Type: application/xop+xml\r\nContent-ID: <root>\r\n\r\n<e/>\r\n"
            f"--{boundary}\r\nContent-Type: application/octet-stream\r\nContent-ID: <big>\r\n\r\n"
        ).encode()
        + part
        + f"\r\n--{boundary}--\r\n".encode()
    )
    content_type = f'multipart/related; boundary="{boundary}"; start="<root>"; type="application/xop+xml"'
    with pytest.raises(XmlTooLarge):
        read_message(io.BytesIO(raw), content_type, MtomLimits(max_part_bytes=1024 * 1024))
    message = read_message(io.BytesIO(raw), content_type)
    assert message.root.tag == "e" and len(message.attachments["big"].read()) == len(part)
    message.close()
