"""The structural check refuses datasets that pydicom would leniently read as whole."""

from __future__ import annotations

import io

import pytest
from archive.dicom.structure import check_structure
from archive.errors import InvalidDataset

from tests.support.dicom import BUNDLED, bundled_storage_files


def _check(raw: bytes, syntax: str) -> bool:
    return check_structure(io.BytesIO(raw), len(raw), syntax)


@pytest.mark.parametrize("sample", bundled_storage_files(), ids=lambda f: f.path.name)
def test_whole_files_pass_and_report_their_pixel_data(sample) -> None:  # type: ignore[no-untyped-def]
    import pydicom

    raw = sample.path.read_bytes()
    has_pixels = "PixelData" in pydicom.dcmread(sample.path)
    assert _check(raw, sample.transfer_syntax_uid) is has_pixels


@pytest.mark.parametrize("sample", bundled_storage_files()[:20], ids=lambda f: f.path.name)
def test_cut_in_the_middle_of_pixel_data_is_refused(sample) -> None:  # type: ignore[no-untyped-def]
    raw = sample.path.read_bytes()
    with pytest.raises(InvalidDataset):
        _check(raw[: len(raw) - 3], sample.transfer_syntax_uid)


@pytest.mark.parametrize("name", ["MR_truncated.dcm", "rtplan_truncated.dcm"])
def test_pydicoms_own_truncated_samples_are_refused(name: str) -> None:
    import pydicom

    path = BUNDLED / name
    syntax = pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
    with pytest.raises(InvalidDataset):
        _check(path.read_bytes(), syntax)


def test_not_part10_is_refused() -> None:
    with pytest.raises(InvalidDataset, match="not a DICOM Part-10 file"):
        _check(b"\0" * 200, "1.2.840.10008.1.2.1")


def test_truncated_deflate_is_refused() -> None:
    sample = next(f for f in bundled_storage_files() if f.transfer_syntax_uid == "1.2.840.10008.1.2.1.99")
    raw = sample.path.read_bytes()
    with pytest.raises(InvalidDataset):
        _check(raw[: len(raw) // 2], sample.transfer_syntax_uid)
