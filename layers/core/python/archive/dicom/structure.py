"""Strict structural check of an encoded DICOM dataset.

pydicom is deliberately lenient: a dataset cut off in the middle of its pixel data, or with a length
field that points past the end, still "parses". An archive must not accept such an object as if it
were whole, so before storing we walk every element header (nested sequences and encapsulated pixel
data included) and check that each value lies inside its container and that the dataset ends
exactly where the bytes end. Values are skipped by seeking, never read, so the check costs a few
microseconds per element whatever the size of the pixel data.
"""

from __future__ import annotations

import struct
import zlib
from io import BytesIO
from typing import IO

from pydicom.datadict import dictionary_VR
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
)

from archive.errors import InvalidDataset

UNDEFINED = 0xFFFFFFFF
ITEM = (0xFFFE, 0xE000)
ITEM_END = (0xFFFE, 0xE00D)
SEQUENCE_END = (0xFFFE, 0xE0DD)
PIXEL_DATA = (0x7FE0, 0x0010)
# Pixel Data, Float Pixel Data, Double Float Pixel Data
PIXEL_TAGS = {(0x7FE0, 0x0010), (0x7FE0, 0x0008), (0x7FE0, 0x0009)}
LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UR", b"UT", b"UN", b"SV", b"UV"}
MAX_DEPTH = 32
MAX_INFLATED_BYTES = 1024**3


class _Walker:
    def __init__(
        self, fp: IO[bytes], end: int, *, implicit: bool, little: bool, encapsulated: bool = False
    ) -> None:
        self.fp = fp
        self.encapsulated = encapsulated
        self.end = end
        self.implicit = implicit
        self.prefix = "<" if little else ">"
        self.has_pixel_data = False

    def fail(self, message: str) -> InvalidDataset:
        return InvalidDataset(f"{message} at byte {self.fp.tell()}")

    def read(self, n: int) -> bytes:
        data = self.fp.read(n)
        if len(data) != n:
            raise self.fail("dataset ends inside an element header")
        return data

    def tag(self) -> tuple[int, int]:
        group, element = struct.unpack(self.prefix + "HH", self.read(4))
        return group, element

    def item_length(self) -> int:
        return int(struct.unpack(self.prefix + "L", self.read(4))[0])

    def header(self, tag: tuple[int, int], implicit: bool) -> tuple[bytes, int]:
        if implicit:
            length = self.item_length()
            try:
                vr = dictionary_VR((tag[0] << 16) | tag[1]).encode("ascii")
            except KeyError:
                vr = b"UN"
            return (b"SQ" if length == UNDEFINED and vr not in (b"OB", b"OW") else vr), length
        vr = self.read(2)
        if not (65 <= vr[0] <= 90 and 65 <= vr[1] <= 90):
            raise self.fail(f"invalid VR {vr!r} for tag ({tag[0]:04X},{tag[1]:04X})")
        if vr in LONG_VRS:
            self.read(2)
            return vr, self.item_length()
        return vr, int(struct.unpack(self.prefix + "H", self.read(2))[0])

    def skip(self, length: int, end: int) -> None:
        target = self.fp.tell() + length
        if target > end:
            raise self.fail(f"value of {length} bytes runs past the end of its container")
        self.fp.seek(target)

    def dataset(self, end: int, *, implicit: bool, depth: int, until_item_end: bool) -> None:
        """Walk elements until ``end`` (defined length) or the item delimiter (undefined length)."""
        if depth > MAX_DEPTH:
            raise self.fail("sequences nested too deep")
        while True:
            pos = self.fp.tell()
            if pos == end and not until_item_end:
                return
            if pos >= end:
                raise self.fail("dataset ends without its delimiter")
            tag = self.tag()
            if tag == ITEM_END:
                if not until_item_end:
                    raise self.fail("unexpected item delimiter")
                self.read(4)
                return
            if tag[0] == 0xFFFE:
                raise self.fail("unexpected item tag")
            vr, length = self.header(tag, implicit)
            if depth == 0 and tag in PIXEL_TAGS:
                self.has_pixel_data = True
                if tag == PIXEL_DATA and self.encapsulated and length != UNDEFINED:
                    # PS3.5 A.4: compressed pixel data is always encapsulated (undefined length).
                    raise self.fail("native pixel data under an encapsulated transfer syntax")
            if length != UNDEFINED:
                if vr == b"SQ":
                    self.sequence(self.fp.tell() + length, implicit=implicit, depth=depth, defined=True)
                else:
                    self.skip(length, end)
            elif tag == PIXEL_DATA and vr in (b"OB", b"OW"):
                self.fragments(end)
            elif vr in (b"SQ", b"UN"):
                # Undefined-length UN is a sequence encoded in Implicit VR Little Endian (PS3.5 6.2.2).
                self.sequence(end, implicit=implicit or vr == b"UN", depth=depth, defined=False)
            else:
                raise self.fail(f"undefined length not allowed for VR {vr.decode(errors='replace')}")

    def sequence(self, end: int, *, implicit: bool, depth: int, defined: bool) -> None:
        if defined and end > self.end:
            raise self.fail("sequence runs past the end of the dataset")
        while True:
            if defined and self.fp.tell() == end:
                return
            tag = self.tag()
            length = self.item_length()
            if tag == SEQUENCE_END and not defined:
                return
            if tag != ITEM:
                raise self.fail("expected a sequence item")
            if length == UNDEFINED:
                self.dataset(end, implicit=implicit, depth=depth + 1, until_item_end=True)
            else:
                item_end = self.fp.tell() + length
                if item_end > end:
                    raise self.fail("item runs past the end of its sequence")
                self.dataset(item_end, implicit=implicit, depth=depth + 1, until_item_end=False)

    def fragments(self, end: int) -> None:
        while True:
            tag = self.tag()
            length = self.item_length()
            if tag == SEQUENCE_END:
                return
            if tag != ITEM or length == UNDEFINED:
                raise self.fail("malformed encapsulated pixel data")
            self.skip(length, end)


def dataset_offset(fp: IO[bytes]) -> int:
    """Offset of the dataset in a Part-10 file (after preamble, 'DICM' and the file meta group)."""
    fp.seek(128)
    head = fp.read(16)
    if len(head) < 16 or head[:4] != b"DICM":
        raise InvalidDataset("not a DICOM Part-10 file")
    group, element, vr, _, meta_length = struct.unpack("<HH2sHL", head[4:])
    if (group, element) != (0x0002, 0x0000) or vr != b"UL":
        raise InvalidDataset("file meta information has no group length")
    return 132 + 12 + int(meta_length)


def check_structure(fp: IO[bytes], size: int, transfer_syntax: str) -> bool:
    """Raise InvalidDataset unless the Part-10 file in ``fp`` is structurally whole.

    Returns whether the dataset carries pixel data at its top level.
    """
    ts = UID(transfer_syntax)
    start = dataset_offset(fp)
    if start > size:
        raise InvalidDataset("file meta information runs past the end")
    fp.seek(start)
    stream: IO[bytes] = fp
    end = size
    if ts == DeflatedExplicitVRLittleEndian:
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        try:
            data = inflater.decompress(fp.read(), MAX_INFLATED_BYTES)
        except zlib.error as exc:
            raise InvalidDataset(f"deflated dataset does not inflate: {exc}") from exc
        if not inflater.eof:
            raise InvalidDataset("deflated dataset is truncated")
        stream, end = BytesIO(data), len(data)
    implicit = ts == ImplicitVRLittleEndian
    little = ts != ExplicitVRBigEndian
    walker = _Walker(stream, end, implicit=implicit, little=little, encapsulated=ts.is_encapsulated)
    if stream.tell() == end:
        raise InvalidDataset("empty dataset")
    walker.dataset(end, implicit=implicit, depth=0, until_item_end=False)
    return walker.has_pixel_data
