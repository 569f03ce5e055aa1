"""SOAP 1.2 envelopes with WS-Addressing 1.0: reading requests, writing answers and faults.

A request must carry wsa:Action and wsa:MessageID (IHE ITI TF-2x V.3.2); the answer carries its
own wsa:Action, a fresh wsa:MessageID and wsa:RelatesTo with the request's MessageID. A message
that cannot be processed at all is answered with a SOAP Fault whose subcode says why in the terms
of the standard that was broken (WS-Addressing or WS-Security); :func:`fault_for` maps the
archive's exception *types* to those faults.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import BinaryIO

from lxml import etree

from archive.errors import (
    ActionNotSupported,
    AddressingHeaderMissing,
    AssertionAudienceMismatch,
    AssertionExpired,
    AssertionIncomplete,
    AssertionMissing,
    AssertionSignatureInvalid,
    AssertionUnsigned,
    CertificateNotOfAssertion,
    MalformedXml,
    MustUnderstandHeader,
    ResourceIdMismatch,
    SoapFaultError,
    UnsafeXml,
    UntrustedIdentityProvider,
    XmlTooDeep,
    XmlTooLarge,
)
from archive.xds import ns
from archive.xds.xml import DEFAULT_LIMITS, XmlLimits, parse_xml, text_of

# Header blocks this archive processes; any other with mustUnderstand="true" is refused.
_UNDERSTOOD = {ns.WSA, ns.WSSE}
_TRUE = {"true", "1"}


@dataclass(frozen=True)
class SoapRequest:
    """One SOAP 1.2 request: its addressing headers, the security header and the body payload."""

    action: str
    message_id: str
    body: etree._Element
    to: str | None = None
    security: etree._Element | None = None


def read_request(source: bytes | BinaryIO, limits: XmlLimits = DEFAULT_LIMITS) -> SoapRequest:
    """Parse a SOAP 1.2 request (hardened, see :mod:`archive.xds.xml`) and check its headers."""
    return request_from_envelope(parse_xml(source, limits))


def request_from_envelope(envelope: etree._Element) -> SoapRequest:
    """Check an already parsed envelope: SOAP 1.2, one body element, WS-Addressing headers."""
    if envelope.tag != ns.q(ns.SOAP, "Envelope"):
        raise MalformedXml(f"not a SOAP 1.2 envelope: {envelope.tag}")
    header = envelope.find(ns.q(ns.SOAP, "Header"))
    body = envelope.find(ns.q(ns.SOAP, "Body"))
    if body is None:
        raise MalformedXml("SOAP envelope without Body")
    payload = [child for child in body if isinstance(child.tag, str)]
    if len(payload) != 1:
        raise MalformedXml(f"SOAP Body must hold one element, not {len(payload)}")
    blocks = [] if header is None else [child for child in header if isinstance(child.tag, str)]
    for block in blocks:
        must = (block.get(ns.q(ns.SOAP, "mustUnderstand")) or "").strip().lower()
        if must in _TRUE and etree.QName(block).namespace not in _UNDERSTOOD:
            raise MustUnderstandHeader(f"header {block.tag} is not understood")
    action = text_of(_header(blocks, ns.WSA, "Action"))
    if action is None:
        raise AddressingHeaderMissing("wsa:Action is required", header="wsa:Action")
    message_id = text_of(_header(blocks, ns.WSA, "MessageID"))
    if message_id is None:
        raise AddressingHeaderMissing("wsa:MessageID is required", header="wsa:MessageID")
    return SoapRequest(
        action=action,
        message_id=message_id,
        body=payload[0],
        to=text_of(_header(blocks, ns.WSA, "To")),
        security=_header(blocks, ns.WSSE, "Security"),
    )


def _header(blocks: list[etree._Element], namespace: str, local: str) -> etree._Element | None:
    found = [b for b in blocks if b.tag == ns.q(namespace, local)]
    if len(found) > 1:
        raise MalformedXml(f"header {local} given {len(found)} times")
    return found[0] if found else None


def envelope(body: etree._Element, *, action: str, relates_to: str | None) -> etree._Element:
    """A SOAP 1.2 envelope around ``body`` with wsa:Action, a new wsa:MessageID and wsa:RelatesTo."""
    env = etree.Element(ns.q(ns.SOAP, "Envelope"), nsmap={"s": ns.SOAP, "a": ns.WSA})
    header = etree.SubElement(env, ns.q(ns.SOAP, "Header"))
    action_el = etree.SubElement(header, ns.q(ns.WSA, "Action"))
    action_el.set(ns.q(ns.SOAP, "mustUnderstand"), "true")
    action_el.text = action
    etree.SubElement(header, ns.q(ns.WSA, "MessageID")).text = f"urn:uuid:{uuid.uuid4()}"
    if relates_to:
        etree.SubElement(header, ns.q(ns.WSA, "RelatesTo")).text = relates_to
    etree.SubElement(env, ns.q(ns.SOAP, "Body")).append(body)
    return env


def serialize(element: etree._Element) -> bytes:
    """UTF-8 bytes with an XML declaration."""
    return bytes(etree.tostring(element, xml_declaration=True, encoding="UTF-8"))


# --- faults ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SoapFault:
    """A SOAP 1.2 Fault: ``code`` is Sender, Receiver, MustUnderstand or VersionMismatch;
    ``subcode`` a qualified name (namespace, local part) from the standard that was broken."""

    code: str
    reason: str
    subcode: tuple[str, str] | None = None
    problem_header: str | None = None  # WS-Addressing ProblemHeaderQName detail
    action: str = ns.ACTION_SOAP_FAULT


_WSSE_FAULTS: dict[type[SoapFaultError], str] = {
    AssertionMissing: "InvalidSecurity",
    AssertionUnsigned: "InvalidSecurityToken",
    AssertionIncomplete: "InvalidSecurityToken",
    AssertionExpired: "InvalidSecurityToken",
    AssertionSignatureInvalid: "FailedCheck",
    UntrustedIdentityProvider: "FailedAuthentication",
    AssertionAudienceMismatch: "FailedAuthentication",
    ResourceIdMismatch: "FailedAuthentication",
    CertificateNotOfAssertion: "FailedAuthentication",
}


def fault_for(error: SoapFaultError) -> SoapFault:
    """The fault that answers a refused message, chosen by the exception's type."""
    reason = str(error) or type(error).__doc__ or type(error).__name__
    if isinstance(error, AddressingHeaderMissing):
        return SoapFault(
            "Sender",
            reason,
            (ns.WSA, "MessageAddressingHeaderRequired"),
            problem_header=error.header,
            action=ns.ACTION_FAULT,
        )
    if isinstance(error, ActionNotSupported):
        return SoapFault("Sender", reason, (ns.WSA, "ActionNotSupported"), action=ns.ACTION_FAULT)
    if isinstance(error, MustUnderstandHeader):
        return SoapFault("MustUnderstand", reason)
    for kind, local in _WSSE_FAULTS.items():
        if isinstance(error, kind):
            return SoapFault("Sender", reason, (ns.WSSE, local))
    if isinstance(error, UnsafeXml | XmlTooLarge | XmlTooDeep | MalformedXml):
        return SoapFault("Sender", reason)
    return SoapFault("Receiver", reason)


def fault_envelope(fault: SoapFault, *, relates_to: str | None = None) -> bytes:
    """The bytes of a SOAP 1.2 envelope carrying ``fault``."""
    body = etree.Element(ns.q(ns.SOAP, "Fault"), nsmap={"s": ns.SOAP, "a": ns.WSA, "wsse": ns.WSSE})
    code = etree.SubElement(body, ns.q(ns.SOAP, "Code"))
    etree.SubElement(code, ns.q(ns.SOAP, "Value")).text = f"s:{fault.code}"
    if fault.subcode is not None:
        namespace, local = fault.subcode
        prefix = {ns.WSA: "a", ns.WSSE: "wsse"}[namespace]
        sub = etree.SubElement(code, ns.q(ns.SOAP, "Subcode"))
        etree.SubElement(sub, ns.q(ns.SOAP, "Value")).text = f"{prefix}:{local}"
    reason = etree.SubElement(body, ns.q(ns.SOAP, "Reason"))
    text = etree.SubElement(reason, ns.q(ns.SOAP, "Text"))
    text.set("{http://www.w3.org/XML/1998/namespace}lang", "en")
    text.text = fault.reason
    if fault.problem_header:
        detail = etree.SubElement(body, ns.q(ns.SOAP, "Detail"))
        etree.SubElement(detail, ns.q(ns.WSA, "ProblemHeaderQName")).text = fault.problem_header
    return serialize(envelope(body, action=fault.action, relates_to=relates_to))
