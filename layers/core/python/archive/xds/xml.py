"""Hardened XML parsing: the only way XML from outside enters the archive.

lxml (libxml2) is told not to load DTDs, not to resolve entities and not to touch the network;
on top of that any document type declaration is refused outright (an XXE or billion-laughs
payload needs one), the input is read in blocks and refused as soon as it passes the size limit
(nothing more is read), and element nesting deeper than the depth limit is refused while
parsing, before the tree grows. Every refusal is a typed :class:`~archive.errors.SoapFaultError`.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import BinaryIO

from lxml import etree

from archive.errors import MalformedXml, UnsafeXml, XmlTooDeep, XmlTooLarge

_BLOCK = 64 * 1024
# A document type declaration in UTF-8/ASCII and in UTF-16 (either byte order): refused before
# libxml2 even reads the declarations (it would reject a billion-laughs DTD, but only as malformed).
_DOCTYPE = (b"<!DOCTYPE", "<!DOCTYPE".encode("utf-16-le"), "<!DOCTYPE".encode("utf-16-be"))
_DOCTYPE_TAIL = max(len(d) for d in _DOCTYPE) - 1


@dataclass(frozen=True)
class XmlLimits:
    """How much XML one message may have: bytes in total and element nesting depth.

    The defaults fit the largest legitimate messages (an ITI-42 with a thousand document entries
    is about 5 MB and nests 10 deep; a signed SAML assertion adds 8 levels) and stay below
    libxml2's own 10 MB text-node limit, so an oversized message is refused as too large.
    """

    max_bytes: int = 8 * 1024 * 1024
    max_depth: int = 64


DEFAULT_LIMITS = XmlLimits()


def _parser() -> etree.XMLPullParser:
    return etree.XMLPullParser(
        events=("start", "end"),
        resolve_entities=False,
        load_dtd=False,
        dtd_validation=False,
        no_network=True,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
    )


class _Progress:
    """What the parser has seen so far: bytes, whether the root started, the current depth."""

    def __init__(self) -> None:
        self.total = 0
        self.depth = 0
        self.started = False

    def follow(self, parser: etree.XMLPullParser, limits: XmlLimits) -> None:
        for event, element in parser.read_events():
            if event != "start":
                self.depth -= 1
                continue
            if not self.started:
                self.started = True
                docinfo = element.getroottree().docinfo
                if docinfo.doctype or docinfo.internalDTD is not None:
                    raise UnsafeXml("a document type declaration is not accepted")
            self.depth += 1
            if self.depth > limits.max_depth:
                raise XmlTooDeep(f"elements nested deeper than {limits.max_depth}")


def parse_xml(source: bytes | BinaryIO, limits: XmlLimits = DEFAULT_LIMITS) -> etree._Element:
    """Parse one XML document from bytes or a binary stream and return its root element.

    Raises UnsafeXml (DTD, entity), XmlTooLarge, XmlTooDeep or MalformedXml.
    """
    stream: BinaryIO = io.BytesIO(source) if isinstance(source, bytes | bytearray) else source
    parser = _parser()
    state = _Progress()
    tail = b""
    try:
        while True:
            block = stream.read(_BLOCK)
            if not block:
                break
            state.total += len(block)
            if state.total > limits.max_bytes:
                raise XmlTooLarge(f"XML larger than {limits.max_bytes} bytes")
            if not state.started:
                window = tail + block
                if any(d in window for d in _DOCTYPE):
                    raise UnsafeXml("a document type declaration is not accepted")
                tail = window[-_DOCTYPE_TAIL:]
            parser.feed(block)
            state.follow(parser, limits)
        root = parser.close()
        state.follow(parser, limits)  # a tiny document's events only come out at the end
    except etree.XMLSyntaxError as exc:
        raise MalformedXml(f"not well-formed XML: {exc}") from exc
    if not state.started:
        raise MalformedXml("no root element")
    # Belt and braces: an entity reference can only survive parsing as an _Entity node.
    for node in root.iter(etree.Entity):
        raise UnsafeXml(f"entity reference {node.text!r} is not accepted")
    return root


def text_of(element: etree._Element | None) -> str | None:
    """The element's text with surrounding whitespace removed; None for no element or no text."""
    if element is None or element.text is None:
        return None
    value = element.text.strip()
    return value or None
