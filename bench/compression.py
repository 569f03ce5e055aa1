"""How much lossless compression would save on real images (docs/storage.md, bench/results/cost.md).

    python -m bench.compression

For each of pydicom's bundled uncompressed images (real CT, MR, US, CR ... pixel data) it measures:
- ``zlib``/``lzma``: the whole stored Part-10 file compressed as bytes; decompressing gives back the
  exact stored object (checked), so checksums and the "bytes as received" rule hold;
- ``j2k``: the pixel data encoded JPEG 2000 lossless (what a service that transcodes to HTJ2K
  lossless, such as AWS HealthImaging, bills after; HTJ2K compresses about as well as J2K).
Ratios are original bytes / compressed bytes, summed over the set (large images weigh more).
"""

from __future__ import annotations

import lzma
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_files
from pydicom.uid import JPEG2000Lossless


@dataclass(frozen=True)
class Measured:
    name: str
    file_bytes: int
    zlib_bytes: int
    lzma_bytes: int
    pixel_bytes: int
    j2k_bytes: int | None


def uncompressed_images() -> list[Path]:
    found = []
    for name in sorted(get_testdata_files("*.dcm")):
        try:
            ds = pydicom.dcmread(name)
        except Exception:  # files pydicom cannot read are not images to measure
            continue
        syntax = ds.file_meta.get("TransferSyntaxUID")
        if "PixelData" not in ds or syntax is None or syntax.is_compressed:
            continue
        try:
            single_frame = ds.get("SamplesPerPixel", 1) == 1 and int(ds.get("NumberOfFrames", 1) or 1) == 1
        except ValueError:
            continue
        if single_frame:
            found.append(Path(name))
    return found


def measure(path: Path) -> Measured:
    data = path.read_bytes()
    deflated = zlib.compress(data, 9)
    xz = lzma.compress(data, preset=9)
    assert zlib.decompress(deflated) == data and lzma.decompress(xz) == data
    ds = pydicom.dcmread(path)
    pixel_bytes = len(ds.PixelData)
    try:
        ds.compress(JPEG2000Lossless)
        j2k: int | None = len(ds.PixelData)
    except Exception:
        j2k = None
    return Measured(path.name, len(data), len(deflated), len(xz), pixel_bytes, j2k)


def main() -> None:
    warnings.simplefilter("ignore")
    rows = [measure(p) for p in uncompressed_images()]
    print("| file | bytes | zlib-9 | lzma-9 | pixel bytes | J2K lossless |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r.name} | {r.file_bytes} | {r.zlib_bytes} | {r.lzma_bytes} | {r.pixel_bytes} | {r.j2k_bytes} |"
        )
    total = sum(r.file_bytes for r in rows)
    j2k_rows = [r for r in rows if r.j2k_bytes]
    print()
    print(f"images: {len(rows)}, {total} bytes")
    print(f"zlib-9 ratio (whole files): {total / sum(r.zlib_bytes for r in rows):.2f}")
    print(f"lzma-9 ratio (whole files): {total / sum(r.lzma_bytes for r in rows):.2f}")
    print(
        f"J2K lossless ratio (pixel data, {len(j2k_rows)} images): "
        f"{sum(r.pixel_bytes for r in j2k_rows) / sum(r.j2k_bytes or 0 for r in j2k_rows):.2f}"
    )


if __name__ == "__main__":
    main()
