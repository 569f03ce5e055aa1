"""Strict structural check of an encoded DICOM dataset.

pydicom is deliberately lenient: a dataset cut off in the middle of its pixel data, or with a length
field that points past the end, still "parses"; a repeated element silently replaces the first, and
file meta elements found inside the dataset are merged into the file meta. An archive must not
accept such an object as if it were whole and unambiguous, so before storing we walk every element
header (nested sequences and encapsulated pixel data included) and check that

- each value lies inside its container and the dataset ends exactly where the bytes end;
- every VR is one PS3.5 defines, and the encoding is the negotiated transfer syntax's (no explicit
  VR elements on an implicit context, no encapsulated pixel data on a native one, no native pixel
  data of the wrong size, no native pixel data on a compressed one);
- tags ascend strictly in every dataset and item, so no element occurs twice (two readers could
  take different copies) and none is out of place;
- no file meta (group 0002) or command (group 0000) element sits in the dataset.

What is irregular but has one reading is tolerated and reported (``StructureReport.tolerated``):
odd value lengths, group length elements (even stale ones: readers ignore them), a lone (0000,0000),
and native pixel data longer than the image it describes (trailing padding). Values are skipped by seeking, never read (except a few small pixel-description
values), so the check costs a few microseconds per element whatever the size of the pixel data.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
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
SHORT_VRS = {
    b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT", b"PN",
    b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US",
}  # fmt: skip
VALID_VRS = LONG_VRS | SHORT_VRS
# Values the native pixel data size is checked against (read at the top level only).
ROWS, COLUMNS = (0x0028, 0x0010), (0x0028, 0x0011)
SAMPLES_PER_PIXEL, BITS_ALLOCATED, NUMBER_OF_FRAMES = (0x0028, 0x0002), (0x0028, 0x0100), (0x0028, 0x0008)
PHOTOMETRIC_INTERPRETATION = (0x0028, 0x0004)
PIXEL_DESCRIPTION = {
    ROWS,
    COLUMNS,
    SAMPLES_PER_PIXEL,
    BITS_ALLOCATED,
    NUMBER_OF_FRAMES,
    PHOTOMETRIC_INTERPRETATION,
}
MAX_DEPTH = 32
MAX_INFLATED_BYTES = 1024**3

# What is tolerated, by the code the object's metadata and the log record it under.
ODD_LENGTH = "odd-length"
GROUP_LENGTH = "group-length"
COMMAND_GROUP_LENGTH = "command-group-length"
# A group length that disagrees with its group: every current reader ignores group lengths
# (PS3.5 7.2 retired them), and converters such as GDCM leave stale ones behind.
GROUP_LENGTH_MISMATCH = "group-length-mismatch"
PIXEL_PADDING = "pixel-data-padding"


@dataclass(frozen=True)
class StructureReport:
    """What the check found in a dataset it accepts."""

    has_pixel_data: bool
    # Irregularities with only one reading, tolerated (see the module docstring), sorted.
    tolerated: tuple[str, ...] = ()


def _tag(tag: tuple[int, int]) -> str:
    return f"({tag[0]:04X},{tag[1]:04X})"


def _dictionary_vrs(tag: tuple[int, int]) -> set[bytes]:
    if tag[1] == 0x0000:
        return {b"UL"}
    try:
        return {vr.encode("ascii") for vr in dictionary_VR((tag[0] << 16) | tag[1]).split(" or ")}
    except KeyError:
        return set()


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
        self.tolerated: set[str] = set()
        self.pixel_values: dict[tuple[int, int], bytes] = {}
        self.native_pixel_length: int | None = None

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
            known = _dictionary_vrs(tag)
            peek = self.read(4)
            if peek[:2] in known:
                # The 4-byte length of an implicit element cannot start with its own VR's letters
                # (the value would be at least 16 kB long and odd): this is explicit VR data.
                raise self.fail(f"explicit VR element {_tag(tag)} on an Implicit VR Little Endian context")
            length = int(struct.unpack("<L", peek)[0])
            # Of "US or OW" and "OB or OW", OW: what matters is whether it may have undefined length.
            vr = b"UL" if tag[1] == 0x0000 else (max(known) if known else b"UN")
            return (b"SQ" if length == UNDEFINED and vr not in (b"OB", b"OW") else vr), length
        vr = self.read(2)
        if vr not in VALID_VRS:
            raise self.fail(f"invalid VR {vr!r} for tag {_tag(tag)}")
        if vr in LONG_VRS:
            self.read(2)
            return vr, self.item_length()
        return vr, int(struct.unpack(self.prefix + "H", self.read(2))[0])

    def skip(self, length: int, end: int) -> None:
        target = self.fp.tell() + length
        if target > end:
            raise self.fail(f"value of {length} bytes runs past the end of its container")
        self.fp.seek(target)

    def value(self, length: int, end: int) -> bytes:
        if self.fp.tell() + length > end:
            raise self.fail(f"value of {length} bytes runs past the end of its container")
        return self.read(length)

    def dataset(self, end: int, *, implicit: bool, depth: int, until_item_end: bool) -> None:
        """Walk elements until ``end`` (defined length) or the item delimiter (undefined length)."""
        if depth > MAX_DEPTH:
            raise self.fail("sequences nested too deep")
        previous: tuple[int, int] | None = None
        # (group, where its group length says the group ends)
        group_end: tuple[int, int] | None = None
        while True:
            pos = self.fp.tell()
            if group_end is not None and (pos >= end or self._peek_group() != group_end[0]):
                if pos != group_end[1]:
                    self.tolerated.add(GROUP_LENGTH_MISMATCH)
                group_end = None
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
            self._check_place(tag, previous)
            previous = tag
            vr, length = self.header(tag, implicit)
            if tag[1] == 0x0000:
                # Group length (retired outside the command set): readers skip it, so it is tolerated
                # as long as it is itself well formed.
                if vr != b"UL" or length != 4:
                    raise self.fail(f"group length {_tag(tag)} is not a 4-byte UL")
                group_length = int(struct.unpack(self.prefix + "L", self.value(4, end))[0])
                group_end = (tag[0], self.fp.tell() + group_length)
                self.tolerated.add(COMMAND_GROUP_LENGTH if tag[0] == 0x0000 else GROUP_LENGTH)
                continue
            if length != UNDEFINED and length % 2:
                self.tolerated.add(ODD_LENGTH)
            if depth == 0 and tag in PIXEL_TAGS:
                self.has_pixel_data = True
                if tag == PIXEL_DATA and self.encapsulated and length != UNDEFINED:
                    # PS3.5 A.4: compressed pixel data is always encapsulated (undefined length).
                    raise self.fail("native pixel data under an encapsulated transfer syntax")
                if tag == PIXEL_DATA and not self.encapsulated and length != UNDEFINED:
                    self.native_pixel_length = length
            if depth == 0 and tag in PIXEL_DESCRIPTION and length != UNDEFINED and length <= 16:
                self.pixel_values[tag] = self.value(length, end)
            elif length != UNDEFINED:
                if vr == b"SQ":
                    self.sequence(self.fp.tell() + length, implicit=implicit, depth=depth, defined=True)
                else:
                    self.skip(length, end)
            elif tag == PIXEL_DATA and vr in (b"OB", b"OW"):
                if not self.encapsulated:
                    raise self.fail("encapsulated (compressed) pixel data under a native transfer syntax")
                self.fragments(end)
            elif vr in (b"SQ", b"UN"):
                # Undefined-length UN is a sequence encoded in Implicit VR Little Endian (PS3.5 6.2.2).
                self.sequence(end, implicit=implicit or vr == b"UN", depth=depth, defined=False)
            else:
                raise self.fail(f"undefined length not allowed for VR {vr.decode(errors='replace')}")

    def _peek_group(self) -> int:
        here = self.fp.tell()
        data = self.fp.read(2)
        self.fp.seek(here)
        return int(struct.unpack(self.prefix + "H", data)[0]) if len(data) == 2 else -1

    def _check_place(self, tag: tuple[int, int], previous: tuple[int, int] | None) -> None:
        if previous is not None and tag <= previous:
            what = "repeated" if tag == previous else "out of order (after " + _tag(previous) + ")"
            raise self.fail(f"element {_tag(tag)} {what}")
        if tag[0] == 0x0002:
            raise self.fail(f"file meta element {_tag(tag)} inside the dataset")
        if tag[0] == 0x0000 and tag[1] != 0x0000:
            raise self.fail(f"command element {_tag(tag)} inside the dataset")

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

    def check_native_pixel_length(self) -> None:
        """Native Pixel Data must hold Rows x Columns x Samples x Frames x Bits Allocated: less is
        other data (for example a JPEG stream) in the wrong place; more is trailing padding, which
        readers ignore (tolerated)."""
        if self.native_pixel_length is None:
            return
        us = self.prefix + "H"
        try:
            rows, columns, bits = (
                int(struct.unpack(us, self.pixel_values[t][:2])[0]) for t in (ROWS, COLUMNS, BITS_ALLOCATED)
            )
            samples = (
                int(struct.unpack(us, self.pixel_values[SAMPLES_PER_PIXEL][:2])[0])
                if SAMPLES_PER_PIXEL in self.pixel_values
                else 1
            )
            raw_frames = self.pixel_values.get(NUMBER_OF_FRAMES, b"").strip(b" \0")
            frames = int(raw_frames.split(b"\\")[0]) if raw_frames else 1
        except (KeyError, ValueError, struct.error):
            return  # no pixel description to check against; the SOP class checks cover that
        if self.pixel_values.get(PHOTOMETRIC_INTERPRETATION, b"").strip(b" \0") == b"YBR_FULL_422":
            samples = 2  # PS3.3 C.7.6.3.1.2: two chrominance samples shared by each pair of pixels
        expected = (rows * columns * samples * frames * bits + 7) // 8
        if self.native_pixel_length < expected:
            raise InvalidDataset(
                f"native Pixel Data of {self.native_pixel_length} bytes, but {rows}x{columns}x{samples}"
                f"x{frames} at {bits} bits is {expected}"
            )
        if self.native_pixel_length > expected + expected % 2:
            self.tolerated.add(PIXEL_PADDING)


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


def check_structure(fp: IO[bytes], size: int, transfer_syntax: str) -> StructureReport:
    """Raise InvalidDataset unless the Part-10 file in ``fp`` is structurally whole and unambiguous.

    Returns whether the dataset carries pixel data at its top level, and what was tolerated.
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
    walker.check_native_pixel_length()
    return StructureReport(walker.has_pixel_data, tuple(sorted(walker.tolerated)))
