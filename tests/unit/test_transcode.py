"""Writing a stored object in another transfer syntax, and measuring a deflated one, in bounded memory."""

from __future__ import annotations

import io
import tracemalloc
import zlib
from pathlib import Path

import pydicom
import pytest
from archive.dicom.deflate import inflated_size, refuse_inflation_beyond
from archive.dicom.structure import check_structure
from archive.dicom.transcode import encoded_edit, head_edited, rewrite, swap_bytes
from archive.errors import ObjectTooLarge
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import read_dataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from tests.support.dicom import ct_dataset

MIB = 1024 * 1024


def _nested(path: Path) -> Path:
    """Explicit VR LE with undefined-length sequences two deep, a private block and a VR UN value."""
    ds = ct_dataset()
    inner = Dataset()
    inner.CodeValue = "T-D1100"
    inner.CodingSchemeDesignator = "SRT"
    outer = Dataset()
    outer.CodeMeaning = "Head"
    outer.add_new(0x00080104, "LO", "Head")
    outer.AnatomicRegionModifierSequence = Sequence([inner])
    ds.AnatomicRegionSequence = Sequence([outer])
    ds.add_new(0x00090010, "LO", "ACME 1.0")
    ds.add_new(0x00091001, "LO", "private text")
    ds.add_new(0x00111234, "UN", b"\x01\x02\x03\x04")
    ds.save_as(path, enforce_file_format=True)
    return path


def _read(path: Path) -> pydicom.Dataset:
    return pydicom.dcmread(path)


@pytest.mark.parametrize(
    ("stored", "target"),
    [
        (ExplicitVRLittleEndian, ImplicitVRLittleEndian),
        (ImplicitVRLittleEndian, ExplicitVRLittleEndian),
        (ExplicitVRLittleEndian, ExplicitVRLittleEndian),
    ],
)
def test_rewrite_keeps_sequences_private_tags_and_pixels(tmp_path: Path, stored: str, target: str) -> None:
    # Given an object with nested sequences, private and unknown tags, stored in ``stored``
    source = _nested(tmp_path / "a.dcm")
    if stored != ExplicitVRLittleEndian:
        ds = _read(source)
        ds.file_meta.TransferSyntaxUID = stored
        ds.save_as(source, implicit_vr=True, little_endian=True)
    out = tmp_path / "b.dcm"

    # When it is rewritten in ``target`` with the patient renamed
    def rename(ds: Dataset) -> None:
        ds.PatientName = "Uusi^Nimi"

    rewrite(source, stored, target, out, rename, memory_limit=64 * MIB)
    # Then the result is structurally whole in the target syntax, with every value as before
    raw = out.read_bytes()
    check_structure(io.BytesIO(raw), len(raw), target)
    before, after = _read(source), _read(out)
    assert after.file_meta.TransferSyntaxUID == target
    assert str(after.PatientName) == "Uusi^Nimi"
    region = after.AnatomicRegionSequence[0]
    assert region.AnatomicRegionModifierSequence[0].CodeValue == "T-D1100"
    # (implicit VR cannot say what an unknown private tag is: it is UN there, with the same bytes)
    private = after[0x00091001].value
    assert (private if isinstance(private, bytes) else private.encode()) == b"private text"
    assert after[0x00111234].value == b"\x01\x02\x03\x04"
    assert after.PixelData == before.PixelData
    assert (after.pixel_array == before.pixel_array).all()


def test_splicing_a_large_object_holds_only_its_header(tmp_path: Path) -> None:
    # Given a 64 MiB multi-frame object stored in Explicit VR Little Endian
    ds = ct_dataset(rows=512, columns=512)
    ds.NumberOfFrames = 128
    ds.PixelData = bytes(512 * 512 * 2 * 128)
    source = tmp_path / "big.dcm"
    ds.save_as(source, enforce_file_format=True)
    del ds
    out = tmp_path / "out.dcm"
    # When it is rewritten in Implicit VR Little Endian
    tracemalloc.start()
    rewrite(source, ExplicitVRLittleEndian, ImplicitVRLittleEndian, out, lambda d: None, memory_limit=8 * MIB)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # Then no more than a few chunks were held, and the pixel data arrived whole
    assert peak < 4 * MIB, peak
    raw = out.read_bytes()
    check_structure(io.BytesIO(raw), len(raw), ImplicitVRLittleEndian)
    assert len(raw) > 64 * MIB


def test_swap_bytes_per_unit() -> None:
    assert swap_bytes(b"\x01\x02\x03\x04", 2) == b"\x02\x01\x04\x03"
    assert swap_bytes(b"\x01\x02\x03\x04\x05", 4) == b"\x04\x03\x02\x01\x05"


def test_a_deflate_bomb_is_refused_without_inflating_it_in_memory() -> None:
    # Given a few hundred KiB of deflate that inflate to 256 MiB
    squeezer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    zeros = bytes(MIB)
    bomb = b"".join(squeezer.compress(zeros) for _ in range(256)) + squeezer.flush()
    assert len(bomb) < MIB
    # When its inflated size is checked against a 16 MiB limit
    tracemalloc.start()
    with pytest.raises(ObjectTooLarge):
        inflated_size(io.BytesIO(bomb), limit=16 * MIB)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # Then it is refused holding a few MiB at most (the input and one inflate step)
    assert peak < 8 * MIB, peak
    # and an honest stream's size is counted exactly
    assert inflated_size(io.BytesIO(zlib.compress(b"x" * 1000)[2:-4]), limit=MIB) == 1000


def test_part10_deflated_file_beyond_the_object_limit_is_refused(tmp_path: Path) -> None:
    # Given a Deflated Part-10 CT whose dataset inflates to about 2 MiB
    ds = ct_dataset(rows=1024, columns=1024)
    ds.PixelData = bytes(1024 * 1024 * 2)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    path = tmp_path / "deflated.dcm"
    ds.save_as(path, enforce_file_format=True)
    assert path.stat().st_size < 64 * 1024
    with open(path, "rb") as fp:
        # Then a 1 MiB object limit refuses it, a 4 MiB one lets it through, other syntaxes pass
        with pytest.raises(ObjectTooLarge):
            refuse_inflation_beyond(fp, DeflatedExplicitVRLittleEndian, MIB)
        refuse_inflation_beyond(fp, DeflatedExplicitVRLittleEndian, 4 * MIB)
        refuse_inflation_beyond(fp, ExplicitVRLittleEndian, 1)
        assert fp.tell() == 0


# --- sending as stored: only the coerced elements re-encoded ------------------------------------


def _coerced(ds: Dataset) -> None:
    ds.PatientID = "NEW-ID"
    ds.PatientName = "Merged^Survivor"
    ds.IssuerOfPatientIDQualifiersSequence = [Dataset()]
    ds.IssuerOfPatientIDQualifiersSequence[0].UniversalEntityID = "1.2.3"


def _with_undefined_sequence_before_patient(path: Path, syntax: str) -> Path:
    ds = ct_dataset()
    item = Dataset()
    item.ReferencedSOPClassUID = CTImageStorage
    item.ReferencedSOPInstanceUID = "1.2.3.4"
    item.is_undefined_length_sequence_item = True
    ds.ReferencedImageSequence = Sequence([item])  # (0008,1140), before group 0010
    ds["ReferencedImageSequence"].is_undefined_length = True
    ds.PatientAge = "042Y"  # (0010,1010), kept from the stored bytes
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_head_edited_matches_a_full_rewrite(tmp_path: Path, syntax: str) -> None:
    """Given a stored object with an undefined-length sequence before the patient module, when it is sent as stored with the coerced elements spliced in, then it reads exactly as
    the full re-encoding does, and every byte from group 0011 on is the stored bytes."""
    stored = _with_undefined_sequence_before_patient(tmp_path / "in.dcm", syntax).read_bytes()
    implicit = syntax == ImplicitVRLittleEndian

    spliced = head_edited(stored, syntax, lambda charset, imp: encoded_edit(_coerced, charset, imp))
    full = io.BytesIO()
    rewrite(tmp_path / "in.dcm", syntax, syntax, full, _coerced, memory_limit=MIB)

    assert spliced is not None
    ours = read_dataset(io.BytesIO(spliced), implicit, True)
    theirs = pydicom.dcmread(io.BytesIO(full.getvalue()))
    assert ours.PatientID == "NEW-ID" and str(ours.PatientName) == "Merged^Survivor"
    assert ours.PatientAge == "042Y"
    assert ours.ReferencedImageSequence[0].ReferencedSOPInstanceUID == "1.2.3.4"
    assert b"\xff\xff\xff\xff" in stored[: stored.index(b"\x10\x00\x10\x00")]  # undefined length
    for element in theirs:
        if element.tag.element != 0:
            assert ours[element.tag].value == element.value, element.keyword
    assert spliced.endswith(stored[stored.index(b"\xe0\x7f\x10\x00") :])


def test_head_edited_declines_a_change_of_character_set() -> None:
    """Given an edit that switches the object to UTF-8, the splice declines (every later text
    element would have to be re-encoded) and the caller takes the full rewrite."""

    def to_utf8(ds: Dataset) -> None:
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.PatientName = "Müller^Jörg"

    assert encoded_edit(to_utf8, ("ISO_IR 100",), False) is None
    assert encoded_edit(to_utf8, (), True) is None
    assert encoded_edit(_coerced, ("ISO_IR 100",), True) is not None
