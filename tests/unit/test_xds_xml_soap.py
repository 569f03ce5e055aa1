"""Hardened XML parsing and the SOAP 1.2 / WS-Addressing envelope: hostile input is refused with a
typed error that maps to a SOAP Fault, and nothing of it is expanded, fetched or read past the limit."""

from __future__ import annotations

import io

import pytest
from archive.errors import (
    ActionNotSupported,
    AddressingHeaderMissing,
    AssertionSignatureInvalid,
    MalformedXml,
    MustUnderstandHeader,
    UnsafeXml,
    XmlTooDeep,
    XmlTooLarge,
)
from archive.xds import ns
from archive.xds.soap import envelope, fault_envelope, fault_for, read_request
from archive.xds.xml import XmlLimits, parse_xml
from lxml import etree

from tests.support.xds import XDS

SOAP_NS = {"s": ns.SOAP, "a": ns.WSA}


def soap(headers: str, body: str = "<ping xmlns='urn:test'/>") -> bytes:
    return (
        f"<s:Envelope xmlns:s='{ns.SOAP}' xmlns:a='{ns.WSA}'><s:Header>{headers}</s:Header>"
        f"<s:Body>{body}</s:Body></s:Envelope>"
    ).encode()


ADDRESSING = "<a:Action>urn:ihe:iti:2007:RegistryStoredQuery</a:Action><a:MessageID>urn:uuid:1</a:MessageID>"


class CountingStream(io.RawIOBase):
    """An endless body of ``filler`` bytes after ``head``, counting what was read."""

    def __init__(self, head: bytes, filler: bytes, total: int) -> None:
        self.head, self.filler, self.total, self.read_bytes = head, filler, total, 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        size = 65536 if size is None or size < 0 else size
        remaining = self.total - self.read_bytes
        if remaining <= 0:
            return b""
        n = min(size, remaining)
        data = (self.head[self.read_bytes :] + self.filler * (n // len(self.filler) + 1))[:n]
        self.read_bytes += n
        return data


def test_xxe_external_entity_is_refused_and_not_read(tmp_path):
    # Given a document whose entity would pull in a local file
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET")
    xxe = f'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file://{secret}">]><r>&x;</r>'.encode()
    # When it is parsed, Then it is refused for its DTD
    with pytest.raises(UnsafeXml):
        parse_xml(xxe)


def test_billion_laughs_is_refused_without_expansion():
    # Ten levels of ten references: 10^9 "lol"s if anything expanded them.
    lol = '<!ENTITY l0 "lol">' + "".join(f'<!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, 10))
    bomb = f'<?xml version="1.0"?><!DOCTYPE lolz [{lol}]><lolz>&l9;</lolz>'.encode()
    with pytest.raises(UnsafeXml):
        parse_xml(bomb)


def test_external_dtd_reference_is_refused():
    with pytest.raises(UnsafeXml):
        parse_xml(b'<?xml version="1.0"?><!DOCTYPE r SYSTEM "http://127.0.0.1:1/evil.dtd"><r/>')


def test_undeclared_entity_is_malformed():
    with pytest.raises(MalformedXml):
        parse_xml(b"<r>&x;</r>")


def test_a_100_mb_body_is_refused_after_reading_little_more_than_the_limit():
    # Given a 100 MB body of an ever-growing text node, and a 1 MB limit
    stream = CountingStream(b"<r>", b"A" * 4096, 100 * 1024 * 1024)
    # When it is parsed
    with pytest.raises(XmlTooLarge):
        parse_xml(stream, XmlLimits(max_bytes=1024 * 1024))  # type: ignore[arg-type]
    # Then reading stopped one block after the limit
    assert stream.read_bytes <= 1024 * 1024 + 64 * 1024


def test_default_limit_refuses_a_100_mb_envelope():
    stream = CountingStream(
        b"<s:Envelope xmlns:s='" + ns.SOAP.encode() + b"'><s:Body><x>", b"B" * 8192, 100 * 1024**2
    )
    with pytest.raises(XmlTooLarge):
        read_request(stream)  # type: ignore[arg-type]
    assert stream.read_bytes < 20 * 1024 * 1024


def test_too_deep_nesting_is_refused_while_parsing():
    deep = b"<a>" * 200 + b"</a>" * 200
    with pytest.raises(XmlTooDeep):
        parse_xml(deep, XmlLimits(max_depth=64))
    assert parse_xml(b"<a>" * 64 + b"</a>" * 64, XmlLimits(max_depth=64)).tag == "a"


def test_not_well_formed_is_malformed():
    for bad in (b"", b"<a>", b"<a></b>", b"\x00\x01"):
        with pytest.raises(MalformedXml):
            parse_xml(bad)


def test_the_public_iti18_request_reads_with_its_addressing_headers():
    request = read_request((XDS / "ITI-18_request_raw.xml").read_bytes())
    assert request.action == ns.ACTION_ITI18
    assert request.message_id == "urn:uuid:31D7E4B5-C117-481E-9EE1-F32849E81BF8"
    assert request.to == "https://epd-test.ith-icoserve.com:7443/Registry/services/RegistryService"
    assert request.body.tag == ns.q(ns.QUERY, "AdhocQueryRequest")
    assert request.security is not None and request.security.find(ns.q(ns.SAML, "Assertion")) is not None


@pytest.mark.parametrize(
    ("headers", "missing"),
    [
        ("<a:Action>urn:ihe:iti:2007:RegistryStoredQuery</a:Action>", "wsa:MessageID"),
        ("<a:MessageID>urn:uuid:1</a:MessageID>", "wsa:Action"),
        ("<a:MessageID>  </a:MessageID><a:Action>x</a:Action>", "wsa:MessageID"),
    ],
)
def test_missing_addressing_header_is_a_fault_naming_it(headers, missing):
    with pytest.raises(AddressingHeaderMissing) as caught:
        read_request(soap(headers))
    fault = etree.fromstring(fault_envelope(fault_for(caught.value), relates_to=None))
    assert fault.findtext(".//s:Fault/s:Code/s:Value", namespaces=SOAP_NS) == "s:Sender"
    assert fault.findtext(".//s:Subcode/s:Value", namespaces=SOAP_NS) == "a:MessageAddressingHeaderRequired"
    assert fault.findtext(".//s:Detail/a:ProblemHeaderQName", namespaces=SOAP_NS) == missing
    assert fault.findtext("s:Header/a:Action", namespaces=SOAP_NS) == ns.ACTION_FAULT


def test_mustunderstand_header_not_processed_is_refused():
    unknown = "<x:Tx xmlns:x='urn:other' s:mustUnderstand='true'/>"
    with pytest.raises(MustUnderstandHeader) as caught:
        read_request(soap(ADDRESSING + unknown))
    assert fault_for(caught.value).code == "MustUnderstand"
    # Not marked mustUnderstand: ignored
    assert read_request(soap(ADDRESSING + "<x:Tx xmlns:x='urn:other'/>")).message_id == "urn:uuid:1"


def test_soap_11_and_bodies_without_one_element_are_malformed():
    soap11 = (
        b"<e:Envelope xmlns:e='http://schemas.xmlsoap.org/soap/envelope/'><e:Body><x/></e:Body></e:Envelope>"
    )
    for bad in (soap11, soap(ADDRESSING, body=""), soap(ADDRESSING, body="<x/><y/>")):
        with pytest.raises(MalformedXml):
            read_request(bad)


def test_answer_envelope_relates_to_the_request():
    body = etree.Element("{urn:test}pong")
    env = etree.fromstring(etree.tostring(envelope(body, action="urn:answer", relates_to="urn:uuid:1")))
    assert env.findtext("s:Header/a:Action", namespaces=SOAP_NS) == "urn:answer"
    assert env.findtext("s:Header/a:RelatesTo", namespaces=SOAP_NS) == "urn:uuid:1"
    assert env.findtext("s:Header/a:MessageID", namespaces=SOAP_NS).startswith("urn:uuid:")
    assert env.find("s:Body/{urn:test}pong", namespaces=SOAP_NS) is not None


def test_fault_codes_follow_the_error_type():
    assert fault_for(AssertionSignatureInvalid("x")).subcode == (ns.WSSE, "FailedCheck")
    assert fault_for(ActionNotSupported("x")).subcode == (ns.WSA, "ActionNotSupported")
    assert fault_for(XmlTooLarge("x")).code == "Sender"
    fault = etree.fromstring(fault_envelope(fault_for(UnsafeXml("no DTD")), relates_to="urn:uuid:9"))
    assert fault.findtext(".//s:Reason/s:Text", namespaces=SOAP_NS) == "no DTD"
    assert fault.findtext("s:Header/a:RelatesTo", namespaces=SOAP_NS) == "urn:uuid:9"
