"""The DynamoDB tables follow the pynamodb models (archive.data.schema), one table per spec."""

from __future__ import annotations

from typing import Any

import pytest
from archive.config import TABLE_ENV
from archive.data.schema import KeySpec, TableSpec, table_specs

from tests.infrastructure.conftest import Synthesized
from tests.infrastructure.template_queries import index_function, resources

SPECS = table_specs()


def _key_schema(partition_key: KeySpec, sort_key: KeySpec | None) -> list[dict[str, str]]:
    schema = [{"AttributeName": partition_key.name, "KeyType": "HASH"}]
    if sort_key:
        schema.append({"AttributeName": sort_key.name, "KeyType": "RANGE"})
    return schema


def _table_for(synthesized: Synthesized, spec: TableSpec) -> dict[str, Any]:
    """The table whose name the code receives in the spec's environment variable."""
    _, function = index_function(synthesized.template)
    table_ref = function["Properties"]["Environment"]["Variables"][TABLE_ENV[spec.logical_name]]
    table: dict[str, Any] = synthesized.template.to_json()["Resources"][table_ref["Ref"]]
    assert table["Type"] == "AWS::DynamoDB::Table"
    return table


def test_there_is_one_table_per_spec(production: Synthesized) -> None:
    assert len(resources(production.template, "AWS::DynamoDB::Table")) == len(SPECS)


@pytest.mark.parametrize("spec", SPECS, ids=[spec.logical_name for spec in SPECS])
def test_table_keys_and_indexes_follow_the_model(production: Synthesized, spec: TableSpec) -> None:
    # Given the table behind the spec's environment variable
    props = _table_for(production, spec)["Properties"]

    # Then its key schema and secondary indexes are the model's, with typed attributes
    assert props["KeySchema"] == _key_schema(spec.partition_key, spec.sort_key)
    expected_indexes = {
        index.name: (_key_schema(index.partition_key, index.sort_key), index.projection)
        for index in spec.indexes
    }
    actual_indexes = {
        index["IndexName"]: (index["KeySchema"], index["Projection"]["ProjectionType"])
        for index in props.get("GlobalSecondaryIndexes", [])
    }
    assert actual_indexes == expected_indexes
    keys = [spec.partition_key, spec.sort_key] + [
        k for i in spec.indexes for k in (i.partition_key, i.sort_key)
    ]
    declared = {a["AttributeName"]: a["AttributeType"] for a in props["AttributeDefinitions"]}
    assert declared == {key.name: key.type for key in keys if key}


@pytest.mark.parametrize("spec", SPECS, ids=[spec.logical_name for spec in SPECS])
def test_table_is_on_demand_recoverable_encrypted_and_protected(
    production: Synthesized, spec: TableSpec
) -> None:
    table = _table_for(production, spec)
    props = table["Properties"]

    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert props["SSESpecification"]["SSEEnabled"] is True
    assert props["SSESpecification"]["SSEType"] == "KMS"
    assert props["DeletionProtectionEnabled"] is True
    assert table["DeletionPolicy"] == "Retain"
