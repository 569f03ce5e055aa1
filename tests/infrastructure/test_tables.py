"""The DynamoDB tables follow the pynamodb models (archive.data.schema), one table per spec."""

from __future__ import annotations

from typing import Any

import pytest
from archive.data.schema import KeySpec, TableSpec, table_specs
from archive.topology import TABLE_ENV
from aws_cdk import App

from infrastructure.settings import DeploymentSettings
from tests.infrastructure.conftest import Synthesized, synthesize
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


def test_append_only_tables_grant_no_update_or_delete(production: Synthesized) -> None:
    # Given the tables the models mark append-only (the access log, the patient change history)
    append_only = [spec for spec in SPECS if spec.append_only]
    assert {"access_log", "patient_history", "destruction_records"} <= {
        spec.logical_name for spec in append_only
    }
    _, function = index_function(production.template)
    variables = function["Properties"]["Environment"]["Variables"]
    table_ids = {variables[TABLE_ENV[spec.logical_name]]["Ref"] for spec in append_only}
    # Then no IAM statement on them allows changing or deleting an item, yet some allow PutItem
    puts = 0
    policies = production.template.to_json()["Resources"]
    for policy in (r for r in policies.values() if r["Type"] == "AWS::IAM::Policy"):
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            resources = statement.get("Resource", [])
            if not any(table_id in str(resources) for table_id in table_ids):
                continue
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            assert not {"dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem"} & set(
                actions
            )
            puts += "dynamodb:PutItem" in actions
    assert puts > 0


def test_large_rarely_read_tables_are_infrequent_access_and_the_rest_standard(
    production: Synthesized,
) -> None:
    # Given the production defaults
    classes = {
        spec.logical_name: _table_for(production, spec)["Properties"].get("TableClass") for spec in SPECS
    }

    # Then the instance index and the access log are billed as Standard-Infrequent-Access
    assert classes.pop("instances") == "STANDARD_INFREQUENT_ACCESS"
    assert classes.pop("access_log") == "STANDARD_INFREQUENT_ACCESS"
    # And every other table (C-FIND's studies and series, configuration) stays Standard
    assert set(classes.values()) == {"STANDARD"}


def test_the_infrequent_access_tables_are_chosen_per_stack() -> None:
    # Given a stack (one synth more) whose context names only the series table
    chosen = synthesize(infrequentAccessTables="series")

    # Then the context replaces the default: series is Infrequent Access, the instances Standard
    classes = {spec.logical_name: _table_for(chosen, spec)["Properties"]["TableClass"] for spec in SPECS}
    assert {name for name, cls in classes.items() if cls == "STANDARD_INFREQUENT_ACCESS"} == {"series"}
    assert classes["instances"] == "STANDARD"


def test_none_keeps_every_table_standard() -> None:
    # Given "none" in the context (read without synthesizing)
    settings = DeploymentSettings.from_context(App(context={"infrequentAccessTables": "none"}).node)

    # Then no table is in the Infrequent Access class
    assert settings.infrequent_access_tables == ()


def test_an_unknown_infrequent_access_table_fails_at_synth() -> None:
    with pytest.raises(ValueError, match="no such table"):
        DeploymentSettings.from_context(App(context={"infrequentAccessTables": "instances,instanse"}).node)
