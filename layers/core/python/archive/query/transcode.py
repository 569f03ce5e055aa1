"""Choosing the transfer syntax a retrieved object is sent in, and writing it in that syntax.

Objects are sent as stored whenever the receiver accepted that syntax for the SOP class (only the
header is re-encoded, for attribute coercion). Otherwise an uncompressed little-endian copy is made
(Explicit, else Implicit VR Little Endian): Explicit <-> Implicit by re-encoding every element
(nested sequences, undefined lengths, private tags, VR UN), Big Endian by swapping the binary
values, Deflated by inflating, and compressed pixel data by decoding it with pydicom's pixel
backend and the pylibjpeg plugins (JPEG baseline/extended/lossless, JPEG-LS, JPEG 2000, RLE). The
SOP Instance UID is kept: decoding adds no further loss, as dcm4chee does. Where nothing the
receiver accepts can be produced, TranscodingImpossible: that sub-operation fails, nothing is sent.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pydicom.pixels import get_decoder
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from archive.dicom.transcode import Edit, Source, rewrite
from archive.errors import TranscodingImpossible

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
    source: Source | Path, stored: str, target: str, out: Path, coerce: Edit, *, memory_limit: int
) -> None:
    """Write the Part-10 object ``source`` (stored in ``stored``) to ``out`` in ``target``, coerced."""
    rewrite(source, stored, target, out, coerce, memory_limit=memory_limit)
