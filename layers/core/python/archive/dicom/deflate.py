"""Deflated Explicit VR Little Endian: how large a dataset inflates, found without holding it.

A deflated dataset of a few megabytes can inflate to gigabytes (a "zip bomb"). The size limit of
an object applies to what it inflates to, so the stream is inflated in bounded steps and the output
counted and discarded; the object is refused as soon as the count passes the limit.
"""

from __future__ import annotations

import zlib
from typing import IO

from pydicom.uid import DeflatedExplicitVRLittleEndian

from archive.dicom.structure import dataset_offset
from archive.errors import InvalidDataset, ObjectTooLarge

READ_CHUNK = 64 * 1024
# Most bytes one inflate step may produce, so memory stays bounded whatever the ratio.
INFLATE_STEP = 1024 * 1024


def inflated_size(fp: IO[bytes], *, limit: int) -> int:
    """Bytes the raw-deflate stream from ``fp``'s position inflates to; ObjectTooLarge past ``limit``."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total = 0
    pending = b""
    while True:
        if not pending:
            pending = fp.read(READ_CHUNK)
            if not pending:
                break
        try:
            out = inflater.decompress(pending, INFLATE_STEP)
        except zlib.error as exc:
            raise InvalidDataset(f"deflated dataset does not inflate: {exc}") from exc
        pending = inflater.unconsumed_tail
        total += len(out)
        if total > limit:
            raise ObjectTooLarge(f"deflated dataset inflates beyond the object limit of {limit} bytes")
        if inflater.eof:
            break
    return total


def refuse_inflation_beyond(fp: IO[bytes], transfer_syntax: str, limit: int) -> None:
    """For a Deflated Part-10 file: ObjectTooLarge if its dataset inflates beyond ``limit`` bytes.

    Other syntaxes pass unchecked (their size is the file's size). ``fp`` is left at offset 0.
    """
    if transfer_syntax != DeflatedExplicitVRLittleEndian:
        return
    try:
        fp.seek(dataset_offset(fp))
        inflated_size(fp, limit=limit)
    finally:
        fp.seek(0)
