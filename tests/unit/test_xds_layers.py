"""The XDS code keeps to its floor: model values import nothing of the archive above them, the
codecs no data access or services, and the query service no AWS SDK. An import pointing up fails."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ARCHIVE = Path(__file__).resolve().parents[2] / "layers" / "core" / "python" / "archive"


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


FORBIDDEN = {
    "model": (
        "archive.xds",
        "archive.hl7",
        "archive.dicom",
        "archive.data",
        "archive.services",
        "boto3",
        "pynamodb",
        "lxml",
    ),
    "xds": ("archive.data", "archive.services", "archive.listeners", "boto3", "pynamodb"),
}


@pytest.mark.parametrize(
    "path",
    [
        *sorted((ARCHIVE / "xds").glob("*.py")),
        *sorted((ARCHIVE / "model").glob("xds*.py")),
        ARCHIVE / "model" / "xua.py",
    ],
    ids=lambda p: f"{p.parent.name}/{p.name}",
)
def test_codecs_and_model_import_only_downwards(path: Path):
    floor = path.parent.name
    bad = [m for m in imports(path) if any(m == f or m.startswith(f + ".") for f in FORBIDDEN[floor])]
    assert not bad, f"{path.name} imports {bad}"


def test_query_service_reaches_the_registry_only_through_its_protocol():
    bad = [
        m
        for m in imports(ARCHIVE / "services" / "xds_query.py")
        if m.split(".")[0] in {"boto3", "pynamodb", "lxml"}
    ]
    bad += [
        m
        for m in imports(ARCHIVE / "services" / "xds_query.py")
        if m.startswith(("archive.data", "archive.xds"))
    ]
    assert not bad
