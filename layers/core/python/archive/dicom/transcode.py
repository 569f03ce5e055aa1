"""Choosing the transfer syntax a retrieved object is sent in, and converting it when needed.

Objects are sent as stored whenever the receiver accepted that syntax for the SOP class. Otherwise
an uncompressed little-endian copy is made (Explicit, else Implicit VR Little Endian): compressed
pixel data is decoded with pydicom's pixel backend and the pylibjpeg plugins (JPEG baseline/extended/
lossless, JPEG-LS, JPEG 2000, RLE). The SOP Instance UID is kept: decoding adds no further loss, as
dcm4chee does. Where nothing the receiver accepts can be produced, TranscodingImpossible.
"""

from __future__ import annotations

from collections.abc import Callable

from pydicom.dataset import Dataset
from pydicom.pixels import get_decoder
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from archive.errors import TranscodingImpossible

UNCOMPRESSED_LE = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)


def can_decode(transfer_syntax: str) -> bool:
    """A pixel data decoder with an installed backend exists for this compressed syntax."""
    try:
        return bool(get_decoder(UID(transfer_syntax)).is_available)
    except (NotImplementedError, ValueError):
        return False


def choose_syntax(stored: str, accepted: Callable[[str], bool]) -> str:
    """The syntax to send an object stored in ``stored`` in, given what the receiver ``accepted``."""
    if accepted(stored):
        return stored
    stored_uid = UID(stored)
    convertible = (
        stored_uid in (*UNCOMPRESSED_LE, DeflatedExplicitVRLittleEndian)
        or (stored_uid.is_compressed and can_decode(stored))
    ) and stored_uid != ExplicitVRBigEndian
    if convertible:
        for target in UNCOMPRESSED_LE:
            if accepted(target):
                return str(target)
    raise TranscodingImpossible(
        f"receiver accepts no syntax that {stored_uid.name} can be sent or converted in"
    )


def convert(ds: Dataset, stored: str, target: str) -> Dataset:
    """Make ``ds`` (an in-memory copy read from ``stored``) encodable in ``target``."""
    if target == stored:
        return ds
    if UID(stored).is_compressed and "PixelData" in ds:
        try:
            ds.decompress(generate_instance_uid=False)
        except (RuntimeError, ValueError, NotImplementedError, AttributeError) as exc:
            raise TranscodingImpossible(f"cannot decode {UID(stored).name}: {exc}") from exc
    target_uid = UID(target)
    ds.file_meta.TransferSyntaxUID = target_uid
    # The encoding the dataset will be written in; pynetdicom checks it against the context.
    ds.set_original_encoding(target_uid.is_implicit_VR, target_uid.is_little_endian)
    return ds
