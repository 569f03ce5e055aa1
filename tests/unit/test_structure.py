"""The structural check refuses datasets that pydicom would leniently read as whole."""

from __future__ import annotations

import io

import pytest
from archive.dicom.structure import StructureReport, check_structure
from archive.errors import InvalidDataset

from tests.support.dicom import BUNDLED, bundled_storage_files


def _check(raw: bytes, syntax: str) -> StructureReport:
    return check_structure(io.BytesIO(raw), len(raw), syntax)


@pytest.mark.parametrize("sample", bundled_storage_files(), ids=lambda f: f.path.name)
def test_whole_files_pass_and_report_their_pixel_data(sample) -> None:  # type: ignore[no-untyped-def]
    import pydicom

    raw = sample.path.read_bytes()
    has_pixels = "PixelData" in pydicom.dcmread(sample.path)
    assert _check(raw, sample.transfer_syntax_uid).has_pixel_data is has_pixels


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


# --- issue 15: the malformed corpus through the codec (the integration test sends it raw) --------


def _read(case):  # type: ignore[no-untyped-def]
    import tempfile
    from pathlib import Path

    from archive.dicom.instance import read_header

    with tempfile.TemporaryDirectory() as tmp:
        raw = case.write(Path(tmp) / "case.dcm").read_bytes()
    report = check_structure(io.BytesIO(raw), len(raw), case.transfer_syntax)
    header = read_header(io.BytesIO(raw), has_pixel_data=report.has_pixel_data)
    return report, header


def _corpus(*kinds: str):  # type: ignore[no-untyped-def]
    from tests.support.malformed_dicom import corpus

    return [case for case in corpus() if case.kind in kinds]


@pytest.mark.parametrize("case", _corpus("ambiguous"), ids=lambda c: c.name)
def test_ambiguous_encodings_are_refused_by_the_structural_check(case) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidDataset):
        _read(case)


@pytest.mark.parametrize("case", _corpus("bad"), ids=lambda c: c.name)
def test_unparseable_data_raises_an_archive_error_and_nothing_else(case) -> None:  # type: ignore[no-untyped-def]
    from archive.errors import ArchiveError

    try:
        _, header = _read(case)
    except ArchiveError:
        return
    # What parses must differ from its request (refused as A900 by the store service)
    assert header.sop_instance_uid != case.sop_instance


@pytest.mark.parametrize("case", _corpus("tolerated"), ids=lambda c: c.name)
def test_tolerated_irregularities_are_reported(case) -> None:  # type: ignore[no-untyped-def]
    report, header = _read(case)
    assert case.tolerated in report.tolerated
    assert header.sop_instance_uid == case.sop_instance


def test_a_whole_dataset_reports_nothing_tolerated() -> None:
    sample = next(f for f in bundled_storage_files() if f.path.name == "CT_small.dcm")
    raw = sample.path.read_bytes()
    assert check_structure(io.BytesIO(raw), len(raw), sample.transfer_syntax_uid).tolerated == ()


def test_pydicom_decoding_errors_become_invalid_dataset() -> None:
    from tests.support.malformed_dicom import corpus

    case = next(c for c in corpus() if c.name == "rows-of-three-bytes")
    with pytest.raises(InvalidDataset, match="BytesLengthException"):
        _read(case)
