"""How much lossless compression would save on real CT and MR images (bench/results/cost.md).

    python -m bench.compression

The images are the real, full-size CT and MR of ``pydicom-data`` (512 x 512 CT slices of about
513 KB, a 1024 x 1024 MR, a 484 x 484 MR, a two-frame enhanced CT) and pydicom's bundled small
ones, as stored (uncompressed Part-10 files). For each file it measures:

- what a transcoding service bills after (AWS HealthImaging transcodes to HTJ2K lossless):
  ``ahi_j2k`` is the pixel data encoded JPEG 2000 lossless at the image's Bits Stored, as pydicom
  encodes it (HTJ2K trades a few per cent of size for speed; J2K is the smaller of the two, which
  favours HealthImaging), plus the header;
- what this archive could store while giving back the exact bytes it received:
  ``zlib``/``lzma``/``zstd`` of the whole file; ``delta_lzma``: the header lzma'd and the 16-bit
  pixels through lzma with a 2-byte delta filter; ``j2k_exact``: the header lzma'd and each frame's
  16-bit words encoded J2K lossless at 16 bits (so bits above Bits Stored survive too).
  Every variant is decoded again and the rebuilt file compared with the original byte for byte;
  a variant that does not give the exact bytes is reported as failed, not measured.

Ratios are original bytes / compressed bytes, summed over a set (large images weigh more).
"""

from __future__ import annotations

import lzma
import time
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import openjpeg
import pydicom
import zstandard
from pydicom.data import get_testdata_file
from pydicom.uid import JPEG2000Lossless

# Real clinical CT and MR, uncompressed: pydicom-data's full-size images, then pydicom's own small ones.
FULL_SIZE = ("693_UNCR.dcm", "MR2_UNCR.dcm", "MR-SIEMENS-DICOM-WithOverlays.dcm", "eCT_Supplemental.dcm")
SMALL = ("CT_small.dcm", "MR_small.dcm", "emri_small.dcm")

_DELTA_16 = [{"id": lzma.FILTER_DELTA, "dist": 2}, {"id": lzma.FILTER_LZMA2, "preset": 9}]


@dataclass(frozen=True)
class Measured:
    name: str
    modality: str
    frames: int
    file_bytes: int
    pixel_bytes: int
    zlib_bytes: int
    lzma_bytes: int
    zstd_bytes: int
    delta_lzma_bytes: int
    j2k_exact_bytes: int | None  # None: the rebuilt file was not byte-identical
    ahi_j2k_bytes: int | None  # None: pydicom's encoder refused the image
    j2k_exact_cpu_s: float = 0.0  # CPU seconds to encode, decode and compare (this machine)


def split(data: bytes, pixel_bytes: bytes) -> tuple[bytes, bytes]:
    """The file around its Pixel Data value: (everything before, everything after)."""
    offset = data.rindex(pixel_bytes)
    return data[:offset], data[offset + len(pixel_bytes) :]


def _roundtrip(
    data: bytes, compress: Callable[[bytes], bytes], decompress: Callable[[bytes], bytes]
) -> int | None:
    packed = compress(data)
    return len(packed) if decompress(packed) == data else None


def _frames(ds: pydicom.Dataset, pixel_bytes: bytes) -> list[np.ndarray]:
    """The raw 16-bit words of each frame, as stored (little endian), not masked to Bits Stored."""
    dtype = np.dtype("<i2" if ds.PixelRepresentation else "<u2")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    words = np.frombuffer(pixel_bytes, dtype=dtype)
    return list(words.reshape(frames, int(ds.Rows), int(ds.Columns)))


def j2k_exact(data: bytes, ds: pydicom.Dataset, pixel_bytes: bytes) -> int | None:
    """Header and trailer lzma'd, frames J2K lossless at 16 bits; None unless it rebuilds ``data``."""
    before, after = split(data, pixel_bytes)
    frames = _frames(ds, pixel_bytes)
    codestreams = [openjpeg.encode(frame, bits_stored=16) for frame in frames]
    rest = lzma.compress(before + after, preset=9)
    decoded = b"".join(
        np.asarray(openjpeg.decode(c), dtype=f.dtype).astype(f.dtype.newbyteorder("<")).tobytes()
        for c, f in zip(codestreams, frames, strict=True)
    )
    rebuilt = lzma.decompress(rest)[: len(before)] + decoded + after
    if rebuilt != data:
        return None
    return len(rest) + sum(len(c) for c in codestreams)


def delta_lzma(data: bytes, pixel_bytes: bytes) -> int | None:
    before, after = split(data, pixel_bytes)
    rest = lzma.compress(before + after, preset=9)
    pixels = lzma.compress(pixel_bytes, format=lzma.FORMAT_XZ, filters=_DELTA_16)
    rebuilt = lzma.decompress(rest)[: len(before)] + lzma.decompress(pixels) + after
    return len(rest) + len(pixels) if rebuilt == data else None


def ahi_j2k(path: Path, pixel_bytes: int, file_bytes: int) -> int | None:
    """Bytes after pydicom's J2K lossless encoding of the pixel data at Bits Stored (+ the header)."""
    ds = pydicom.dcmread(path)
    try:
        ds.compress(JPEG2000Lossless)
    except Exception:  # an image the encoder does not take is not measured
        return None
    return file_bytes - pixel_bytes + len(ds.PixelData)


def measure(path: Path) -> Measured:
    data = path.read_bytes()
    ds = pydicom.dcmread(path)
    pixel_bytes = ds.PixelData
    zctx, zdctx = zstandard.ZstdCompressor(level=19), zstandard.ZstdDecompressor()
    lossless = {
        "zlib": _roundtrip(data, lambda b: zlib.compress(b, 9), zlib.decompress),
        "lzma": _roundtrip(data, lambda b: lzma.compress(b, preset=9), lzma.decompress),
        "zstd": _roundtrip(data, zctx.compress, zdctx.decompress),
        "delta": delta_lzma(data, pixel_bytes),
    }
    if any(size is None for size in lossless.values()):
        raise AssertionError(f"{path.name}: a byte-exact codec did not give back the file")
    started = time.process_time()
    j2k = j2k_exact(data, ds, pixel_bytes)
    cpu = time.process_time() - started
    return Measured(
        name=path.name,
        modality=str(ds.get("Modality", "")),
        frames=int(ds.get("NumberOfFrames", 1) or 1),
        file_bytes=len(data),
        pixel_bytes=len(pixel_bytes),
        zlib_bytes=lossless["zlib"] or 0,
        lzma_bytes=lossless["lzma"] or 0,
        zstd_bytes=lossless["zstd"] or 0,
        delta_lzma_bytes=lossless["delta"] or 0,
        j2k_exact_bytes=j2k,
        ahi_j2k_bytes=ahi_j2k(path, len(pixel_bytes), len(data)),
        j2k_exact_cpu_s=cpu,
    )


def images(names: tuple[str, ...]) -> list[Path]:
    """The named test files that are present (pydicom-data's need that package installed)."""
    found = []
    for name in names:
        try:
            found.append(Path(str(get_testdata_file(name))))
        except Exception:  # offline without pydicom-data: get_testdata_file tries to download
            continue
    return found


def ratio(rows: list[Measured], attribute: str) -> float | None:
    sizes = [getattr(r, attribute) for r in rows]
    if not rows or any(s is None for s in sizes):
        return None
    return sum(r.file_bytes for r in rows) / sum(sizes)


COLUMNS = (
    ("zlib-9", "zlib_bytes"),
    ("lzma-9", "lzma_bytes"),
    ("zstd-19", "zstd_bytes"),
    ("delta+lzma", "delta_lzma_bytes"),
    ("J2K exact (16 bit) + lzma header", "j2k_exact_bytes"),
    ("HealthImaging-like J2K", "ahi_j2k_bytes"),
)


def main() -> None:
    warnings.simplefilter("ignore")
    sets = {"full-size CT/MR (pydicom-data)": images(FULL_SIZE), "small CT/MR (pydicom)": images(SMALL)}
    print("| file | modality | frames | bytes | " + " | ".join(title for title, _ in COLUMNS) + " |")
    print("|---|---|---:|---:|" + "---:|" * len(COLUMNS))
    measured: dict[str, list[Measured]] = {}
    for label, paths in sets.items():
        measured[label] = rows = [measure(p) for p in paths]
        for r in rows:
            cells = " | ".join(str(getattr(r, attribute)) for _, attribute in COLUMNS)
            print(f"| {r.name} | {r.modality} | {r.frames} | {r.file_bytes} | {cells} |")
    print()
    print("| set (ratio: stored bytes / compressed bytes) | " + " | ".join(t for t, _ in COLUMNS) + " |")
    print("|---|" + "---:|" * len(COLUMNS))
    for label, rows in measured.items():
        ratios = [ratio(rows, attribute) for _, attribute in COLUMNS]
        cells = " | ".join("n/a" if value is None else f"{value:.2f}" for value in ratios)
        print(f"| {label} ({len(rows)} files) | {cells} |")
    print()
    for label, rows in measured.items():
        if rows:
            per_512k = sum(r.j2k_exact_cpu_s for r in rows) / sum(r.file_bytes for r in rows) * 512e3
            print(f"J2K exact, CPU seconds per 512 KB (encode, decode, compare), {label}: {per_512k:.3f}")


if __name__ == "__main__":
    main()
