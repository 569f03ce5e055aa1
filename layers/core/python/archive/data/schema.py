"""Key schemas and secondary indexes, read off the pynamodb models.

The CDK construct builds its tables from ``table_specs()`` and the local cloud creates its tables
from the same models, so the two cannot drift.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pynamodb.indexes import AllProjection, GlobalSecondaryIndex, KeysOnlyProjection
from pynamodb.models import Model

from archive.data.models import ALL_MODELS


@dataclass(frozen=True)
class KeySpec:
    name: str
    type: str  # "S" | "N" | "B"


@dataclass(frozen=True)
class IndexSpec:
    name: str
    partition_key: KeySpec
    sort_key: KeySpec | None
    projection: str  # "ALL" | "KEYS_ONLY"


@dataclass(frozen=True)
class TableSpec:
    logical_name: str
    partition_key: KeySpec
    sort_key: KeySpec | None
    indexes: tuple[IndexSpec, ...]
    # Items are only ever put (conditionally), never updated or deleted; IAM grants follow that.
    append_only: bool = False


def _keys(attrs: dict[str, Any]) -> tuple[KeySpec, KeySpec | None]:
    hash_key = next(a for a in attrs.values() if a.is_hash_key)
    range_key = next((a for a in attrs.values() if a.is_range_key), None)
    return (
        KeySpec(hash_key.attr_name, hash_key.attr_type),
        KeySpec(range_key.attr_name, range_key.attr_type) if range_key else None,
    )


def table_spec(model: type[Model]) -> TableSpec:
    pk, sk = _keys(model.get_attributes())
    indexes = []
    for value in vars(model).values():
        if isinstance(value, GlobalSecondaryIndex):
            ipk, isk = _keys(value.Meta.attributes)
            projection = value.Meta.projection
            kind = "KEYS_ONLY" if isinstance(projection, KeysOnlyProjection) else "ALL"
            assert isinstance(projection, (AllProjection, KeysOnlyProjection))
            indexes.append(IndexSpec(value.Meta.index_name, ipk, isk, kind))
    meta = model.Meta
    return TableSpec(
        meta.logical_name,  # type: ignore[attr-defined]
        pk,
        sk,
        tuple(indexes),
        append_only=bool(getattr(meta, "append_only", False)),
    )


def table_specs() -> list[TableSpec]:
    return [table_spec(m) for m in ALL_MODELS]
