"""Choosing the transfer syntax a retrieved object is sent in, and writing it in that syntax with
bounded memory.

Objects are sent as stored whenever the receiver accepted that syntax for the SOP class (only the
header is re-encoded, for attribute coercion). Otherwise an uncompressed little-endian copy is made
(Explicit, else Implicit VR Little Endian): Explicit <-> Implicit by re-encoding every element
(nested sequences, undefined lengths, private tags, VR UN), Big Endian by swapping the binary
values, Deflated by inflating, and compressed pixel data by decoding it with pydicom's pixel
backend and the pylibjpeg plugins (JPEG baseline/extended/lossless, JPEG-LS, JPEG 2000, RLE). The
SOP Instance UID is kept: decoding adds no further loss, as dcm4chee does. Where nothing the
receiver accepts can be produced, TranscodingImpossible: that sub-operation fails, nothing is sent.

Writing takes one of two ways, chosen by what the conversion needs:

- **Splice** (stored syntax = target, or Explicit <-> Implicit VR Little Endian): only the elements
  before the pixel data are parsed, edited (attribute coercion) and re-encoded by pydicom in the
  target syntax; the pixel data value and everything after it are copied from the stored bytes in
  1 MiB chunks (for Explicit <-> Implicit only the pixel data element's own header is rewritten;
  native little-endian pixel bytes are the same in both). Memory: the header, whatever the object's
  size. A 2 GB multi-frame image costs the same as a 2 KB one. The stored bytes come from a
  ``Source``: the header through a seekable reader, the rest as one sequential stream, so a large
  object is read once, straight from the store into the file that is sent.
- **In memory** (decompression of an encapsulated syntax, Big Endian, Deflated): the whole dataset
  is read, decoded and re-encoded by pydicom; refused with TranscodingImpossible above
  ``memory_limit`` bytes (stored plus decoded size) instead of exhausting the listener.

pydicom converts Explicit <-> Implicit correctly only if the dataset's ``original_encoding`` is
left as read: raw elements (nested sequences, private tags, VR UN) are then decoded and
re-encoded. Declaring the target as the "original" encoding makes pydicom copy them verbatim in the
old encoding, which is what produced "Element PatientID larger than remaining bytes" at receivers.
"""

from __future__ import annotations

import io
import shutil
import struct
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, BinaryIO, Protocol

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomFileLike
from pydicom.filereader import data_element_generator, read_dataset
from pydicom.filewriter import dcmwrite, write_dataset, write_file_meta_info
from pydicom.pixels import get_decoder
from pydicom.tag import BaseTag
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from archive.dicom.structure import dataset_offset
from archive.errors import TranscodingImpossible

COPY_CHUNK = 1024 * 1024
NATIVE_LE = frozenset({ExplicitVRLittleEndian, ImplicitVRLittleEndian})
PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})
# Explicit VR elements with a 4-byte length field (PS3.5 7.1.2)
LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UR", b"UT", b"UN", b"SV", b"UV"}
# Byte-swap unit of "other" binary VRs between big and little endian.
SWAP_UNIT = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}
UNDEFINED = 0xFFFFFFFF

Edit = Callable[[Dataset], Any]


class Source(Protocol):
    """Where a stored Part-10 object's bytes are read from."""

    size: int

    def header(self) -> Any:
        """A context manager giving a seekable binary reader over the whole object."""

    def tail(self, offset: int) -> Any:
        """A context manager giving a sequential reader of the object from ``offset`` to its end."""

    def whole(self) -> Any:
        """A context manager giving a local Path holding the whole object (in-memory conversions)."""


class FileSource:
    """A Part-10 file on local disk."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = path.stat().st_size

    @contextmanager
    def header(self) -> Iterator[BinaryIO]:
        with open(self.path, "rb") as fp:
            yield fp

    @contextmanager
    def tail(self, offset: int) -> Iterator[BinaryIO]:
        with open(self.path, "rb") as fp:
            fp.seek(offset)
            yield fp

    @contextmanager
    def whole(self) -> Iterator[Path]:
        yield self.path


Out = Path | BinaryIO


def spliced(stored: str, target: str) -> bool:
    """Whether converting ``stored`` to ``target`` re-encodes only the header (output about as large
    as the stored object, memory bounded by the header) rather than the whole dataset in memory."""
    stored_uid, target_uid = UID(stored), UID(target)
    return stored_uid != DeflatedExplicitVRLittleEndian and (
        stored_uid == target_uid or (stored_uid in NATIVE_LE and target_uid in NATIVE_LE)
    )


@contextmanager
def _opened(out: Out) -> Iterator[BinaryIO]:
    if isinstance(out, Path):
        with open(out, "wb") as dest:
            yield dest
    else:
        yield out


def rewrite(
    source: Source | Path,
    stored: str,
    target: str,
    out: Out,
    edit: Edit,
    *,
    memory_limit: int,
) -> None:
    """Write ``source`` (a Part-10 object in ``stored``) to ``out`` (a file, or a binary stream) as
    Part-10 in ``target``, with ``edit`` applied to the dataset. Raises TranscodingImpossible if it
    cannot be done."""
    if isinstance(source, Path):
        source = FileSource(source)
    stored_uid, target_uid = UID(stored), UID(target)
    if spliced(stored, target) and _splice(source, stored_uid, target_uid, out, edit):
        return
    _in_memory(source, stored_uid, target_uid, out, edit, memory_limit)


UNCOMPRESSED_LE = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)


def can_decode(transfer_syntax: str) -> bool:
    """A pixel data decoder with an installed backend exists for this compressed syntax."""
    try:
        return bool(get_decoder(UID(transfer_syntax)).is_available)
    except (NotImplementedError, ValueError):
        return False


def convertible_to_uncompressed(stored: str) -> bool:
    stored_uid = UID(stored)
    return stored_uid in (*UNCOMPRESSED_LE, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian) or (
        stored_uid.is_compressed and can_decode(stored)
    )


def choose_syntax(stored: str, accepted: Callable[[str], bool]) -> str:
    """The syntax to send an object stored in ``stored`` in, given what the receiver ``accepted``."""
    if accepted(stored):
        return stored
    if convertible_to_uncompressed(stored):
        for target in UNCOMPRESSED_LE:
            if accepted(target):
                return str(target)
    raise TranscodingImpossible(
        f"receiver accepts no syntax that {UID(stored).name} can be sent or converted in"
    )


def write_for_receiver(
    source: Source | Path, stored: str, target: str, out: Out, coerce: Edit, *, memory_limit: int
) -> None:
    """Write the Part-10 object ``source`` (stored in ``stored``) to ``out`` in ``target``, coerced."""
    rewrite(source, stored, target, out, coerce, memory_limit=memory_limit)


# --- splice --------------------------------------------------------------------------------------


def _at_pixels(tag: BaseTag, vr: str | None, length: int) -> bool:
    return int(tag) in PIXEL_TAGS


def _splice(source: Source, stored: UID, target: UID, out: Out, edit: Edit) -> bool:
    """Re-encode the header, copy the pixel data; False if the layout needs the in-memory path."""
    total = source.size
    with source.header() as fp:
        start = dataset_offset(fp)
        fp.seek(start)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            header = read_dataset(fp, stored.is_implicit_VR, stored.is_little_endian, stop_when=_at_pixels)
        pixel_start = fp.tell()
        pixel: tuple[int, bytes, int] | None = None
        if pixel_start < total and stored != target:
            fp.seek(pixel_start)
            pixel = _pixel_element(fp, stored, header)
            if pixel is None:
                return False
            value_start = fp.tell()
    header.file_meta = _file_meta(header, target)
    edit(header)
    with _opened(out) as dest:
        dcmwrite(dest, header, enforce_file_format=True)
        if pixel is None:
            # Same syntax: the stored bytes from the pixel data element on, unchanged.
            with source.tail(pixel_start) as rest:
                _copy(rest, dest, total - pixel_start)
            return True
        tag, vr, length = pixel
        dest.write(_element_header(tag, vr, length, target))
        with source.tail(value_start) as rest:
            _copy(rest, dest, length)
            if value_start + length < total:
                trailer = io.BytesIO(rest.read(total - value_start - length))
                _reencode_trailer(trailer, stored, target, header, dest)
    return True


def _pixel_element(fp: IO[bytes], stored: UID, header: Dataset) -> tuple[int, bytes, int] | None:
    """Tag, VR and length of the native pixel data element at ``fp`` (positioned after its header)."""
    group, element = struct.unpack("<HH", fp.read(4))
    tag = (group << 16) | element
    if stored.is_implicit_VR:
        (length,) = struct.unpack("<L", fp.read(4))
        if tag == 0x7FE00010:
            vr = b"OW" if int(header.get("BitsAllocated", 16)) > 8 else b"OB"
        else:
            vr = b"OF" if tag == 0x7FE00008 else b"OD"
    else:
        vr = fp.read(2)
        if vr in LONG_VRS:
            fp.read(2)
            (length,) = struct.unpack("<L", fp.read(4))
        else:
            (length,) = struct.unpack("<H", fp.read(2))
    if length == UNDEFINED:
        return None  # encapsulated data under a native syntax: let pydicom judge it
    return tag, vr, length


def _element_header(tag: int, vr: bytes, length: int, target: UID) -> bytes:
    tag_bytes = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
    if target.is_implicit_VR:
        return tag_bytes + struct.pack("<L", length)
    return tag_bytes + vr + b"\0\0" + struct.pack("<L", length)


def _reencode_trailer(fp: io.BytesIO, stored: UID, target: UID, header: Dataset, dest: IO[bytes]) -> None:
    """Elements after the pixel data (padding, private groups): small, parsed and re-encoded."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trailer = read_dataset(
            fp,
            stored.is_implicit_VR,
            stored.is_little_endian,
            bytelength=len(fp.getbuffer()),
            parent_encoding=header.get("SpecificCharacterSet", "iso8859"),
        )
    writer = DicomFileLike(dest)
    writer.is_implicit_VR = target.is_implicit_VR
    writer.is_little_endian = True
    write_dataset(writer, trailer, header.get("SpecificCharacterSet", "iso8859"))


def _copy(src: IO[bytes], dest: IO[bytes], length: int) -> None:
    remaining = length
    while remaining > 0:
        chunk = src.read(min(COPY_CHUNK, remaining))
        if not chunk:
            raise TranscodingImpossible("stored object ends inside its pixel data")
        dest.write(chunk)
        remaining -= len(chunk)


def _file_meta(ds: Dataset, target: UID) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = target
    return meta


# --- in memory -----------------------------------------------------------------------------------


def native_size(ds: Dataset) -> int:
    """Bytes of the decoded pixel data the image attributes announce."""
    frames = int(ds.get("NumberOfFrames") or 1)
    bits = int(ds.get("BitsAllocated") or 8)
    samples = int(ds.get("SamplesPerPixel") or 1)
    return int(ds.get("Rows") or 0) * int(ds.get("Columns") or 0) * samples * frames * max(bits, 8) // 8


def _in_memory(source: Source, stored: UID, target: UID, out: Out, edit: Edit, memory_limit: int) -> None:
    size = source.size
    if size > memory_limit:
        raise TranscodingImpossible(
            f"{stored.name} object of {size} bytes exceeds the conversion limit of {memory_limit}"
        )
    with warnings.catch_warnings(), source.whole() as path:
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path)
        if stored.is_compressed and stored != DeflatedExplicitVRLittleEndian and "PixelData" in ds:
            if target.is_compressed:
                raise TranscodingImpossible(f"no encoder from {stored.name} to {target.name}")
            if size + native_size(ds) > memory_limit:
                raise TranscodingImpossible(
                    f"decoded {stored.name} object exceeds the conversion limit of {memory_limit} bytes"
                )
            try:
                ds.decompress(generate_instance_uid=False)
            except Exception as exc:  # any decoder failure: this sub-operation fails, others go on
                raise TranscodingImpossible(f"cannot decode {stored.name}: {exc}") from exc
        if not stored.is_little_endian and target.is_little_endian:
            _big_to_little_endian(ds)
    ds.file_meta = _file_meta(ds, target)
    edit(ds)
    with _opened(out) as dest:
        dcmwrite(dest, ds, enforce_file_format=True)


# --- objects sent from memory --------------------------------------------------------------------

# Attribute coercion edits the patient module (group 0010) and at most the Specific Character Set
# (0008,0005): only the elements before group 0011 need to be parsed to apply it.
COERCED_HEAD_END = 0x00110000


def dataset_bytes(part10: bytes) -> memoryview:
    """The encoded dataset of a Part-10 object (after preamble and file meta), without a copy."""
    return memoryview(part10)[dataset_offset(io.BytesIO(part10)) :]


Replacements = Callable[[tuple[str, ...], bool], dict[int, bytes] | None]


def head_edited(part10: bytes, stored: str, replacements: Replacements) -> bytes | None:
    """The dataset of ``part10`` in its stored syntax with some top-level elements before group
    0011 replaced, every other byte as stored: the usual way an object leaves the archive (sent as
    stored, patient identity coerced). ``replacements(character_set, implicit_vr)`` gives the new
    elements, encoded, by tag (see ``encoded_edit``); nothing is decoded or re-encoded but those.
    None when that is not enough: the syntax is deflated or big endian, or the replacements need
    another character set (every later text element would need re-encoding); the caller then
    takes ``rewrite``'s way.
    """
    syntax = UID(stored)
    if syntax == DeflatedExplicitVRLittleEndian or not syntax.is_little_endian:
        return None
    fp = io.BytesIO(part10)
    fp.seek(dataset_offset(fp))
    spans = _element_spans(fp, syntax.is_implicit_VR, COERCED_HEAD_END)
    rest = fp.tell()
    charset = spans.get(0x00080005)
    values = _charset(part10[charset[0] : charset[1]]) if charset else ()
    new = replacements(values, syntax.is_implicit_VR)
    if new is None:
        return None
    out = io.BytesIO()
    for tag in sorted(set(spans) | set(new)):
        if tag in new:
            out.write(new[tag])
        elif tag & 0xFFFF:  # group lengths (retired) are dropped: they would no longer be right
            begin, end = spans[tag]
            out.write(memoryview(part10)[begin:end])
    out.write(memoryview(part10)[rest:])
    return out.getvalue()


def encoded_edit(edit: Edit, charset: tuple[str, ...], implicit_vr: bool) -> dict[int, bytes] | None:
    """The elements ``edit`` sets on a dataset in ``charset``, each encoded (little endian), by
    tag; None if the edit changes the character set. ``edit`` must set values whatever the dataset
    holds (as attribute coercion does), since it sees an empty one."""
    ds = Dataset()
    if charset:
        ds.SpecificCharacterSet = list(charset) if len(charset) > 1 else charset[0]
    before = ds.get("SpecificCharacterSet")
    edit(ds)
    if ds.get("SpecificCharacterSet") != before:
        return None
    buffer = io.BytesIO()
    writer = DicomFileLike(buffer)
    writer.is_implicit_VR = implicit_vr
    writer.is_little_endian = True
    write_dataset(writer, ds)
    encoded = buffer.getvalue()
    buffer.seek(0)
    return {
        tag: encoded[begin:end]
        for tag, (begin, end) in _element_spans(buffer, implicit_vr, None).items()
        if tag != 0x00080005
    }


def _element_spans(fp: io.BytesIO, implicit_vr: bool, stop: int | None) -> dict[int, tuple[int, int]]:
    """Byte ranges of the top-level elements from ``fp``'s position up to tag ``stop`` (``fp`` is
    left at the first element not read)."""
    spans: dict[int, tuple[int, int]] = {}
    begin = fp.tell()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for element in data_element_generator(
            fp,
            implicit_vr,
            True,
            stop_when=None if stop is None else (lambda tag, vr, length: int(tag) >= stop),
        ):
            end = fp.tell()
            spans[int(element.tag)] = (begin, end)
            begin = end
    return spans


def _charset(element: bytes) -> tuple[str, ...]:
    """The values of an encoded (0008,0005) Specific Character Set element (CS: its header is 8
    bytes in both Implicit and Explicit VR: tag, then a 4-byte length or VR and 2-byte length)."""
    values = tuple(v.strip(" \0") for v in element[8:].decode("ascii", "replace").split("\\"))
    return values if any(values) else ()


def part10(sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str, encoded: bytes) -> bytes:
    """A Part-10 file (preamble, file meta) around a dataset encoded in ``transfer_syntax``."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class_uid)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)
    meta.TransferSyntaxUID = UID(transfer_syntax)
    buffer = io.BytesIO()
    buffer.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(DicomFileLike(buffer), meta, enforce_standard=True)
    buffer.write(encoded)
    return buffer.getvalue()


def _big_to_little_endian(ds: Dataset) -> None:
    """Swap the bytes of binary values pydicom keeps as bytes (numbers it re-encodes itself).

    Native pixel data is swapped per pixel cell (BitsAllocated), as pydicom and DCMTK read it.
    """
    bits = int(ds.get("BitsAllocated") or 16)
    for element in ds.iterall():
        value = element.value
        if element.VR not in SWAP_UNIT or not isinstance(value, bytes | bytearray):
            continue
        unit = SWAP_UNIT[element.VR]
        if element.tag == 0x7FE00010 and element.VR == "OW" and bits in (32, 64):
            unit = bits // 8
        element.value = swap_bytes(bytes(value), unit)


def swap_bytes(value: bytes, unit: int) -> bytes:
    """Reverse the byte order of each ``unit``-byte word of ``value`` (a trailing odd byte stays)."""
    whole = len(value) - len(value) % unit
    out = bytearray(value)
    for offset in range(unit):
        out[offset:whole:unit] = value[unit - 1 - offset : whole : unit]
    return bytes(out)


def copy_stream(src: IO[bytes], dest: IO[bytes]) -> int:
    """Copy a stream in bounded chunks; returns the number of bytes."""
    before = dest.tell()
    shutil.copyfileobj(src, dest, COPY_CHUNK)
    return dest.tell() - before
