"""The archive's malformed C-STORE corpus and its bounded fuzzer, generated deterministically.

Each case is a dataset's bytes as they travel in a C-STORE (no file meta), the transfer syntax of
the presentation context it is sent on, and the SOP Class/Instance the request names. Cases come in
classes with what the archive must answer:

- ``bad``: cannot be parsed as sent -> 0xC000 or 0xA900, never 0xA700 (which makes senders retry);
- ``ambiguous``: two readers could take it differently -> refused (0xC000 or 0xA900), never stored;
- ``tolerated``: irregular but with one reading -> stored as received (0x0000), the irregularity
  recorded in the object's ``tolerated`` metadata.

``python -m tests.support.malformed_dicom DIR`` writes the corpus as Part-10 files (to send with any
SCU, e.g. DCMTK storescu) and prints one line per case.
"""

from __future__ import annotations

import random
import struct
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import correct_ambiguous_vr, write_data_element
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
)
from pynetdicom.sop_class import CTImageStorage, SecondaryCaptureImageStorage  # type: ignore[attr-defined]

from tests.support.dicom import BUNDLED, HETU_ISSUER, ct_dataset
from tests.support.scu import part10

# Deterministic UIDs under the project's test root: each integration session has a fresh archive.
CORPUS_ROOT = "1.2.826.0.1.3680043.10.1394.15."
LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UR", b"UT", b"UN", b"SV", b"UV"}
JPEG_SEED = BUNDLED / "SC_rgb_jpeg_dcmtk.dcm"  # JPEG Baseline, 100 x 100 RGB, Secondary Capture
BAD, AMBIGUOUS, TOLERATED, FUZZ = "bad", "ambiguous", "tolerated", "fuzz"

Tag = tuple[int, int]


@dataclass(frozen=True)
class Case:
    name: str
    kind: str
    transfer_syntax: str
    sop_class: str
    sop_instance: str
    dataset: bytes
    # For tolerated cases: the code the archive records in the object's metadata.
    tolerated: str | None = None

    def write(self, path: Path) -> Path:
        return part10(self.sop_class, self.sop_instance, self.transfer_syntax, self.dataset, path)


def element(tag: Tag, vr: bytes, value: bytes, *, length: int | None = None, implicit: bool = False) -> bytes:
    """One element, little endian, with an optional (wrong) length field."""
    n = len(value) if length is None else length
    if implicit:
        return struct.pack("<HHL", *tag, n) + value
    if vr in LONG_VRS:
        return struct.pack("<HH2sHL", *tag, vr, 0, n) + value
    return struct.pack("<HH2sH", *tag, vr, n) + value


def item(content: bytes, *, undefined: bool = False) -> bytes:
    if undefined:
        return (
            struct.pack("<HHL", 0xFFFE, 0xE000, 0xFFFFFFFF) + content + struct.pack("<HHL", 0xFFFE, 0xE00D, 0)
        )
    return struct.pack("<HHL", 0xFFFE, 0xE000, len(content)) + content


UNDEFINED = 0xFFFFFFFF


def elements(ds: Dataset, *, implicit: bool = False) -> list[tuple[Tag, bytes]]:
    """Each top-level element of ``ds`` encoded on its own, in tag order."""
    correct_ambiguous_vr(ds, True)
    out = []
    for elem in ds:
        buf = DicomBytesIO()
        buf.is_little_endian = True
        buf.is_implicit_VR = implicit
        write_data_element(buf, elem)
        out.append(((elem.tag.group, elem.tag.element), buf.getvalue()))
    return out


def join(parts: list[tuple[Tag, bytes]]) -> bytes:
    return b"".join(raw for _, raw in parts)


def insert(parts: list[tuple[Tag, bytes]], tag: Tag, raw: bytes) -> list[tuple[Tag, bytes]]:
    """``parts`` with ``raw`` placed where ``tag`` sorts (after an element with the same tag)."""
    index = next((i for i, (t, _) in enumerate(parts) if t > tag), len(parts))
    return [*parts[:index], (tag, raw), *parts[index:]]


def replace(parts: list[tuple[Tag, bytes]], tag: Tag, raw: bytes) -> list[tuple[Tag, bytes]]:
    assert any(t == tag for t, _ in parts), tag
    return [(t, raw if t == tag else r) for t, r in parts]


def without(parts: list[tuple[Tag, bytes]], tag: Tag) -> list[tuple[Tag, bytes]]:
    return [(t, r) for t, r in parts if t != tag]


def deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


class _Uids:
    def __init__(self, run: str) -> None:
        self.root = f"{CORPUS_ROOT}{run}."
        self.n = 0

    def __call__(self) -> str:
        self.n += 1
        return f"{self.root}{self.n}"


SOP_INSTANCE, STUDY, SERIES = (0x0008, 0x0018), (0x0020, 0x000D), (0x0020, 0x000E)
PATIENT_ID, STUDY_DESCRIPTION, PIXEL_DATA = (0x0010, 0x0020), (0x0008, 0x1030), (0x7FE0, 0x0010)
ROWS = (0x0028, 0x0010)


def _uid(value: str) -> bytes:
    raw = value.encode()
    return raw + b"\0" * (len(raw) % 2)


def corpus(run: str = "1") -> Iterator[Case]:
    """Every malformed case, deterministic for a given ``run`` (which only changes the UIDs)."""
    uid = _Uids(run)

    def ct(**kwargs: object) -> tuple[str, Dataset]:
        sop = uid()
        ds = ct_dataset(sop_instance_uid=sop, study_uid=uid(), series_uid=uid(), **kwargs)  # type: ignore[arg-type]
        return sop, ds

    def explicit(name: str, kind: str, build: object, tolerated: str | None = None) -> Case:
        sop, ds = ct()
        parts = elements(ds)
        data = build(parts, sop) if callable(build) else join(parts)
        return Case(name, kind, ExplicitVRLittleEndian, CTImageStorage, sop, data, tolerated)

    # --- cannot be parsed -------------------------------------------------------------------
    yield explicit("truncated-in-pixel-data", BAD, lambda p, s: join(p)[:-100])
    yield explicit("truncated-in-element-header", BAD, lambda p, s: join(p[:-1]) + p[-1][1][:5])
    yield explicit(
        "length-past-the-end",
        BAD,
        lambda p, s: join(
            insert(p, (0x0009, 0x0010), element((0x0009, 0x0010), b"UN", b"\0" * 16, length=0xFFFFFFF0))
        ),
    )
    code = element((0x0008, 0x0100), b"SH", b"CODE")
    overlong_item = struct.pack("<HHL", 0xFFFE, 0xE000, 64) + code
    yield explicit(
        "item-longer-than-its-sequence",
        BAD,
        lambda p, s: join(insert(p, (0x0008, 0x1032), element((0x0008, 0x1032), b"SQ", overlong_item))),
    )
    yield explicit(
        "sequence-without-delimiter",
        BAD,
        lambda p, s: join(
            insert(
                p,
                (0x0008, 0x1032),
                element((0x0008, 0x1032), b"SQ", item(code, undefined=True), length=UNDEFINED),
            )
        ),
    )
    yield explicit(
        "item-delimiter-at-top-level",
        BAD,
        lambda p, s: join(insert(p, (0x0009, 0x0000), struct.pack("<HHL", 0xFFFE, 0xE00D, 0))),
    )
    yield explicit(
        "garbage-in-place-of-an-item",
        BAD,
        lambda p, s: join(
            insert(p, (0x0008, 0x1032), element((0x0008, 0x1032), b"SQ", b"\x11\x22\x33\x44\0\0\0\0"))
        ),
    )
    yield explicit(
        "unknown-vr",
        BAD,
        lambda p, s: join(
            replace(p, STUDY_DESCRIPTION, element(STUDY_DESCRIPTION, b"ZZ", b"CT test study "))
        ),
    )
    yield explicit(
        "binary-vr",
        BAD,
        lambda p, s: join(
            replace(p, STUDY_DESCRIPTION, element(STUDY_DESCRIPTION, b"\x01\x02", b"CT test study "))
        ),
    )
    yield explicit(
        "undefined-length-text",
        BAD,
        lambda p, s: join(
            replace(
                p, STUDY_DESCRIPTION, element(STUDY_DESCRIPTION, b"UT", b"CT test study ", length=0xFFFFFFFF)
            )
        ),
    )
    yield explicit(
        "rows-of-three-bytes",  # pydicom: BytesLengthException when the value is read
        BAD,
        lambda p, s: join(replace(p, ROWS, element(ROWS, b"US", b"\x10\x00\x00"))),
    )
    yield explicit("empty-dataset", BAD, lambda p, s: b"")
    yield explicit("random-bytes", BAD, lambda p, s: random.Random(s).randbytes(4000))
    yield explicit(
        "native-pixel-data-too-short",
        BAD,
        lambda p, s: join(replace(p, PIXEL_DATA, element(PIXEL_DATA, b"OW", b"\0" * 256))),
    )
    yield explicit(
        "patient-id-of-3000-characters",  # would break the index's key limits after the C-STORE
        BAD,
        lambda p, s: join(replace(p, PATIENT_ID, element(PATIENT_ID, b"LO", b"9" * 3000))),
    )
    yield explicit(
        "patient-id-with-key-separator",
        BAD,
        lambda p, s: join(replace(p, PATIENT_ID, element(PATIENT_ID, b"LO", b"X^^^1.2.3 "))),
    )
    yield explicit(
        "sop-instance-uid-as-us",
        BAD,
        lambda p, s: join(replace(p, SOP_INSTANCE, element(SOP_INSTANCE, b"US", b"\x01\x00"))),
    )
    yield explicit(
        "sop-instance-uid-not-the-requested",
        BAD,
        lambda p, s: join(replace(p, SOP_INSTANCE, element(SOP_INSTANCE, b"UI", _uid(s + ".9")))),
    )
    yield explicit("sop-instance-uid-missing", BAD, lambda p, s: join(without(p, SOP_INSTANCE)))
    yield explicit(
        "study-uid-invalid",
        BAD,
        lambda p, s: join(replace(p, STUDY, element(STUDY, b"UI", b"1.2.abc.4 "))),
    )
    for name, mangle in (
        ("deflate-stream-corrupt", lambda z: z[:40] + bytes(b ^ 0x5A for b in z[40:80]) + z[80:]),
        ("deflate-stream-truncated", lambda z: z[: len(z) // 2]),
        ("deflate-stream-not-deflate", lambda z: b"\xff" * len(z)),
    ):
        sop, ds = ct()
        yield Case(
            name,
            BAD,
            DeflatedExplicitVRLittleEndian,
            CTImageStorage,
            sop,
            mangle(deflate(join(elements(ds)))),
        )

    # --- ambiguous: refused, however lenient a reader could be --------------------------------
    yield explicit(
        "sop-instance-uid-repeated-differently",
        AMBIGUOUS,
        lambda p, s: join(insert(p, SOP_INSTANCE, element(SOP_INSTANCE, b"UI", _uid(s + ".2")))),
    )
    yield explicit(
        "study-uid-repeated-differently",
        AMBIGUOUS,
        lambda p, s: join(insert(p, STUDY, element(STUDY, b"UI", _uid(CORPUS_ROOT + "999.1")))),
    )
    yield explicit(
        "patient-id-repeated-identically",
        AMBIGUOUS,
        lambda p, s: join(insert(p, PATIENT_ID, dict(p)[PATIENT_ID])),
    )
    yield explicit(
        "media-storage-sop-instance-in-dataset",
        AMBIGUOUS,
        lambda p, s: element((0x0002, 0x0003), b"UI", _uid(s + ".7")) + join(p),
    )
    yield explicit(
        "transfer-syntax-uid-in-dataset",
        AMBIGUOUS,
        lambda p, s: element((0x0002, 0x0010), b"UI", _uid(ImplicitVRLittleEndian)) + join(p),
    )
    yield explicit(
        "command-element-in-dataset",
        AMBIGUOUS,
        lambda p, s: element((0x0000, 0x1000), b"UI", _uid(s + ".8")) + join(p),
    )
    yield explicit(
        "tags-out-of-order",
        AMBIGUOUS,
        lambda p, s: join([p[1], p[0], *p[2:]]),
    )
    yield explicit(
        "study-uid-after-series-uid",
        AMBIGUOUS,
        lambda p, s: join(
            [x for x in p if x[0] < STUDY]
            + [(SERIES, dict(p)[SERIES]), (STUDY, dict(p)[STUDY])]
            + [x for x in p if x[0] > SERIES]
        ),
    )
    nested = item(element((0x0008, 0x0104), b"LO", b"meaning ") + element((0x0008, 0x0100), b"SH", b"CODE"))
    yield explicit(
        "out-of-order-inside-an-item",
        AMBIGUOUS,
        lambda p, s: join(insert(p, (0x0008, 0x1032), element((0x0008, 0x1032), b"SQ", nested))),
    )
    sop, ds = ct()
    yield Case(
        "explicit-vr-on-implicit-context",
        AMBIGUOUS,
        ImplicitVRLittleEndian,
        CTImageStorage,
        sop,
        join(elements(ds)),
    )
    sop, ds = ct()
    yield Case(
        "implicit-vr-on-explicit-context",
        AMBIGUOUS,
        ExplicitVRLittleEndian,
        CTImageStorage,
        sop,
        join(elements(ds, implicit=True)),
    )
    jpeg = pydicom.dcmread(JPEG_SEED)
    jpeg_pixels = elements(jpeg)[-1][1]  # encapsulated Pixel Data, as DCMTK wrote it
    jpeg_stream = jpeg.PixelData[16:]  # past the Basic Offset Table item and the fragment's header
    sop, ds = ct(rows=100, columns=100)
    yield Case(
        "jpeg-pixel-data-on-explicit-context",
        AMBIGUOUS,
        ExplicitVRLittleEndian,
        CTImageStorage,
        sop,
        join(replace(elements(ds), PIXEL_DATA, jpeg_pixels)),
    )
    sop, ds = ct(rows=100, columns=100)
    yield Case(
        "jpeg-stream-as-native-pixel-data",
        AMBIGUOUS,
        ExplicitVRLittleEndian,
        CTImageStorage,
        sop,
        join(
            replace(
                elements(ds),
                PIXEL_DATA,
                element(PIXEL_DATA, b"OB", jpeg_stream + b"\0" * (len(jpeg_stream) % 2)),
            )
        ),
    )
    sop = uid()
    yield Case(
        "native-pixel-data-on-jpeg-context",
        AMBIGUOUS,
        JPEGBaseline8Bit,
        SecondaryCaptureImageStorage,
        sop,
        b"".join(_jpeg_seed(sop, uid(), uid())[:-1]) + element(PIXEL_DATA, b"OB", b"\0" * 30000),
    )

    # --- tolerated: one reading, stored as received -------------------------------------------
    yield explicit(
        "odd-value-length",
        TOLERATED,
        lambda p, s: join(replace(p, STUDY_DESCRIPTION, element(STUDY_DESCRIPTION, b"LO", b"CT test study"))),
        "odd-length",
    )
    yield explicit(
        "group-lengths",
        TOLERATED,
        lambda p, s: _with_group_lengths(p, stale=False),
        "group-length",
    )
    yield explicit(
        "stale-group-length",
        TOLERATED,
        lambda p, s: _with_group_lengths(p, stale=True),
        "group-length-mismatch",
    )
    yield explicit(
        "command-group-length-in-dataset",
        TOLERATED,
        lambda p, s: element((0x0000, 0x0000), b"UL", struct.pack("<L", 0)) + join(p),
        "command-group-length",
    )
    yield explicit(
        "padded-native-pixel-data",
        TOLERATED,
        lambda p, s: join(
            replace(
                p,
                PIXEL_DATA,
                dict(p)[PIXEL_DATA][:8] + struct.pack("<L", 512 + 64) + dict(p)[PIXEL_DATA][12:] + b"\0" * 64,
            )
        ),
        "pixel-data-padding",
    )


def _with_group_lengths(parts: list[tuple[Tag, bytes]], *, stale: bool) -> bytes:
    out = b""
    for group in sorted({t[0] for t, _ in parts}):
        body = b"".join(r for t, r in parts if t[0] == group)
        length = len(body) + (8 if stale and group == 0x0010 else 0)
        out += element((group, 0x0000), b"UL", struct.pack("<L", length)) + body
    return out


def _jpeg_seed(sop: str, study: str, series: str) -> list[bytes]:
    """The bundled JPEG Baseline image under new UIDs and a patient with a trusted issuer."""
    ds = pydicom.dcmread(JPEG_SEED)
    ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID = sop, study, series
    ds.PatientID, ds.IssuerOfPatientID = "020516C903K", HETU_ISSUER
    return [raw for _, raw in elements(ds)]


# --- bounded fuzzing --------------------------------------------------------------------------


SEED_SYNTAXES = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    JPEGBaseline8Bit,
)


def seed_case(syntax: str, uid: _Uids) -> Case:
    """A valid object with UIDs of its own: a CT in a native syntax, or the bundled JPEG image."""
    sop = uid()
    if syntax == JPEGBaseline8Bit:
        data = b"".join(_jpeg_seed(sop, uid(), uid()))
        return Case("seed-jpeg", FUZZ, syntax, SecondaryCaptureImageStorage, sop, data)
    ds = ct_dataset(sop_instance_uid=sop, study_uid=uid(), series_uid=uid())
    data = join(elements(ds, implicit=syntax == ImplicitVRLittleEndian))
    if syntax == DeflatedExplicitVRLittleEndian:
        data = deflate(data)
    return Case(f"seed-{syntax}", FUZZ, syntax, CTImageStorage, sop, data)


def _mutate(rng: random.Random, data: bytes) -> tuple[str, bytes]:
    """One seeded mutation of the kinds the issue's fuzz run used."""
    kind = rng.choice(("flip", "truncate", "insert", "delete", "duplicate", "length", "vr"))
    buf = bytearray(data)
    at = rng.randrange(len(buf))
    if kind == "flip":
        for _ in range(rng.randint(1, 4)):
            buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
    elif kind == "truncate":
        del buf[at:]
    elif kind == "insert":
        buf[at:at] = rng.randbytes(rng.randint(1, 16))
    elif kind == "delete":
        del buf[at : at + rng.randint(1, 16)]
    elif kind == "duplicate":
        span = rng.randint(8, 40)
        buf[at:at] = buf[at : at + span]
    elif kind == "length":
        # A 16- or 32-bit field somewhere set to a small, boundary or huge value
        value = rng.choice((0, 1, 2, 0xFF, 0xFFFF, 0xFFFFFFFF, rng.randrange(1 << 32)))
        size = rng.choice((2, 4))
        buf[at : at + size] = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
    else:
        buf[at : at + 2] = rng.choice((b"ZZ", b"UN", b"SQ", b"OB", b"US", b"UI", b"\0\0"))
    return kind, bytes(buf)


def fuzz(seed: int, count: int, run: str = "1") -> Iterator[Case]:
    """``count`` mutations of fresh copies of the seeds, deterministic for ``seed`` and ``run``.

    Each mutation starts from an object with UIDs of its own, so a mutation that still parses is
    a new instance (not a conflicting re-send of another one).
    """
    rng = random.Random(seed)
    uid = _Uids(f"{run}.{seed}")
    for n in range(count):
        base = seed_case(SEED_SYNTAXES[n % len(SEED_SYNTAXES)], uid)
        kind, data = _mutate(rng, base.dataset)
        yield Case(
            f"fuzz-{n}-{kind}-{base.name}",
            FUZZ,
            base.transfer_syntax,
            base.sop_class,
            base.sop_instance,
            data,
        )


def main(argv: list[str]) -> int:
    out = Path(argv[0] if argv else "malformed-corpus")
    out.mkdir(parents=True, exist_ok=True)
    for case in corpus():
        path = case.write(out / f"{case.kind}-{case.name}.dcm")
        print(f"{case.kind:9} {case.name:45} {case.transfer_syntax:24} {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
