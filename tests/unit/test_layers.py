"""Every import points down: model <- codecs / data <- services <- edges (docs/architecture.md).

Imports are read with ``ast`` from the source files (including imports inside functions and
``TYPE_CHECKING`` blocks), so the rules hold whether or not a module is ever imported at run time.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "layers" / "core" / "python"
EDGE_DIRS = ("listeners", "functions", "admin", "local")

# The package itself (its __init__) and these modules are the ground floor, importable by all.
GROUND = ("archive.config", "archive.errors", "archive.topology")
CODECS = ("archive.dicom", "archive.hl7", "archive.xds", "archive.audit", "archive.tls")
AWS_LIBRARIES = ("pynamodb", "boto3", "botocore")
EDGES = (*EDGE_DIRS, "infrastructure", "bench", "tests")


def _within(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(f"{p}.") for p in packages)


def _ground(module: str) -> bool:
    return module == "archive" or _within(module, GROUND)


def module_name(path: Path, base: Path) -> str:
    parts = list(path.relative_to(base).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(source: str, module: str, *, is_package: bool = False) -> Iterator[str]:
    """The absolute names of every module ``source`` (the text of ``module``) imports."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            yield target
            # ``from archive import model`` imports the package archive.model
            yield from (f"{target}.{alias.name}" for alias in node.names if target == "archive")


def violations(module: str, imported: str) -> list[str]:
    """What is wrong with ``module`` importing ``imported``; empty if the arrow points down."""
    problems = []
    internal = _within(imported, ("archive",))
    if _within(imported, AWS_LIBRARIES) and not _within(module, ("archive.data",)):
        problems.append("only archive.data may import pynamodb/boto3/botocore")
    if _within(imported, EDGES) and _within(module, ("archive",)):
        problems.append("the core imports no edge (listeners, functions, admin, local, ...)")
    if (module == "archive" or _within(module, GROUND)) and internal and not _ground(imported):
        problems.append("the ground floor (config, errors, topology) imports nothing above it")
    if _within(module, ("archive.model",)):
        if internal and not _within(imported, ("archive.model", "archive.errors")):
            problems.append("model imports only model and errors")
        if _within(imported, ("pydicom", "pynetdicom", "hl7", "zeep", "lxml")):
            problems.append("model holds plain values: no codec libraries")
    for codec in CODECS:
        allowed = _within(imported, (codec, "archive.model")) or _ground(imported)
        if _within(module, (codec,)) and internal and not allowed:
            problems.append(f"{codec} (a codec) imports only model, errors, config and itself")
    if _within(module, ("archive.data",)) and _within(imported, ("archive.services",)):
        problems.append("data imports no service")
    return problems


def core_modules() -> Iterator[tuple[str, Path]]:
    for path in sorted((CORE / "archive").rglob("*.py")):
        yield module_name(path, CORE), path


def edge_modules() -> Iterator[tuple[str, Path]]:
    for folder in EDGE_DIRS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if "node_modules" not in path.parts:
                yield module_name(path, ROOT), path


def test_every_import_of_the_core_points_down() -> None:
    found = []
    for module, path in core_modules():
        for imported in imports_of(path.read_text(), module, is_package=path.name == "__init__.py"):
            found += [f"{module} imports {imported}: {p}" for p in violations(module, imported)]
    assert found == []


def test_edges_reach_aws_only_through_data() -> None:
    # local/ plays AWS itself (it creates the moto resources), so it may use boto3 directly.
    found = []
    for module, path in edge_modules():
        if module.startswith("local"):
            continue
        for imported in imports_of(path.read_text(), module, is_package=path.name == "__init__.py"):
            if _within(imported, ("pynamodb", "boto3")):
                found.append(f"{module} imports {imported}")
    assert found == []


def test_the_layers_this_test_knows_exist() -> None:
    # A renamed package would silently escape the rules above.
    packages = {m.split(".")[1] for m, _ in core_modules() if m.count(".") >= 1}
    assert {"model", "dicom", "hl7", "data", "services", "audit", "tls"} <= packages


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("archive.model.records", "from archive.data.models import Study", "model imports only"),
        ("archive.model.records", "import pydicom", "no codec libraries"),
        ("archive.dicom.coercion", "from archive.data.models import Patient", "a codec"),
        ("archive.hl7.message", "from archive.services.patients import PatientService", "a codec"),
        ("archive.data.patients", "from archive.services.patients import PatientService", "data imports no"),
        ("archive.services.ingest", "import boto3", "only archive.data"),
        ("archive.services.query.find", "from pynamodb.models import Model", "only archive.data"),
        ("archive.services.ingest", "from listeners.dicom.server import DicomListener", "no edge"),
        ("archive.config", "from archive.data.models import bind_models", "ground floor"),
        ("archive.data.index", "from ..services import indexing", "data imports no"),
    ],
)
def test_an_upward_import_is_reported(module: str, source: str, expected: str) -> None:
    problems = [p for imported in imports_of(source, module) for p in violations(module, imported)]
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("archive.services.ingest", "from archive.data.index import IndexRepository"),
        ("archive.services.ingest", "from archive.dicom.instance import read_header"),
        ("archive.dicom.coercion", "from archive.model.records import PatientDemographics"),
        ("archive.data.index", "from pynamodb.connection import Connection"),
        ("archive.model.patients", "from archive.model.identity import PatientIdentity"),
        ("archive.config", "from archive import topology"),
    ],
)
def test_a_downward_import_is_fine(module: str, source: str) -> None:
    assert [p for imported in imports_of(source, module) for p in violations(module, imported)] == []
