"""The byte-exact compression variants of bench/compression.py give back the stored file."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from bench.compression import delta_lzma, j2k_exact, measure, split

CT = Path(str(get_testdata_file("CT_small.dcm")))


def test_split_finds_the_pixel_data_value_in_the_file() -> None:
    data = CT.read_bytes()
    pixels = pydicom.dcmread(CT).PixelData
    before, after = split(data, pixels)
    assert before + pixels + after == data
    assert len(before) == len(data) - len(pixels) - len(after)


def test_real_ct_compresses_byte_exactly_with_j2k_and_delta_lzma() -> None:
    # Given pydicom's real CT slice as stored
    data = CT.read_bytes()
    ds = pydicom.dcmread(CT)
    # When compressed by the byte-exact variants (each rebuilds the file and compares it)
    j2k = j2k_exact(data, ds, ds.PixelData)
    delta = delta_lzma(data, ds.PixelData)
    # Then both gave the file back and are smaller than it
    assert j2k is not None and j2k < len(data)
    assert delta is not None and delta < len(data)


def test_extreme_16_bit_words_survive_j2k_at_16_bits() -> None:
    # Given the CT with its first pixel's top bit flipped (a value far outside the image's range,
    # as bits above Bits Stored would be; stored, so it must come back)
    ds = pydicom.dcmread(CT)
    pixels = bytearray(ds.PixelData)
    pixels[1] ^= 0x80
    ds.PixelData = bytes(pixels)
    data = CT.read_bytes().replace(pydicom.dcmread(CT).PixelData, bytes(pixels))
    # Then the 16-bit J2K variant still rebuilds the exact file
    assert j2k_exact(data, ds, bytes(pixels)) is not None


def test_measure_reports_every_variant_of_a_real_mr() -> None:
    row = measure(Path(str(get_testdata_file("MR_small.dcm"))))
    assert row.modality == "MR"
    sizes = (row.zlib_bytes, row.lzma_bytes, row.zstd_bytes, row.delta_lzma_bytes, row.j2k_exact_bytes)
    assert all(size is not None and 0 < size < row.file_bytes for size in sizes)
    assert row.ahi_j2k_bytes is not None and row.ahi_j2k_bytes < row.file_bytes
    with pytest.raises(ValueError):
        split(b"no pixels here", b"\x01\x02")
