"""Least privilege: each service's role may use only the tables its code uses, with only the actions
it needs. The expectations are spelled out here, independently of infrastructure/table_access.py."""

from __future__ import annotations

import json
from typing import Any

import pytest
from archive.topology import TABLE_ENV
from aws_cdk.assertions import Match

from tests.infrastructure.conftest import Synthesized
from tests.infrastructure.template_queries import (
    actions_on,
    all_actions,
    arn_of,
    dicom_task_definition,
    index_function,
    only,
    resources,
    statements_of_role,
)

READ = frozenset({"dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query"})
APPEND = READ | {"dynamodb:PutItem"}
WRITE = APPEND | {"dynamodb:UpdateItem"}

OWN = WRITE | {"dynamodb:DeleteItem"}
# Asking for a study's registration: the organisation's settings and the study's schedule.
REQUESTS_REGISTRATION = {"registration_config": READ, "registrations": WRITE}
READS_STUDY_CONTENT = {"patients": READ, "studies": READ, "series": READ, "instances": READ}

EXPECTED: dict[str, dict[str, frozenset[str]]] = {
    "dicom-listener": {
        "organisations": READ,
        "application_entities": READ,
        "patients": READ,
        "studies": WRITE,  # claims a study for its patient before a C-STORE is acknowledged
        "series": READ,
        "instances": READ,
        "commitments": WRITE,
        "commitment_parts": WRITE,
        "access_log": APPEND,
        **REQUESTS_REGISTRATION,  # committed studies
    },
    "index-instance": {
        "patients": WRITE,
        "studies": WRITE,
        "series": WRITE,
        "instances": WRITE,
        **REQUESTS_REGISTRATION,  # registered studies that changed
    },
    "hl7-listener": {"organisations": READ, "hl7_facilities": READ, "patients": READ},
    "patient-update": {
        "patients": WRITE,
        "studies": WRITE,
        "patient_history": APPEND,
        **REQUESTS_REGISTRATION,  # studies of merged or renamed patients
    },
    "register-study": {
        **READS_STUDY_CONTENT,
        "organisations": READ,
        "application_entities": READ,  # the organisation's IAN destinations
        "registration_config": READ,
        "registrations": WRITE,
        "xds_registry": OWN,  # a registration that fails half-way is deleted again
        "ian_notifications": APPEND,
    },
    "send-ian": {
        **READS_STUDY_CONTENT,
        "application_entities": READ,
        "registration_config": READ,
        "ian_notifications": WRITE,
    },
}
CONFIGURATION = ("organisations", "application_entities", "hl7_facilities")
WRITES = frozenset(
    {"dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem"}
)


def _task_role(synthesized: Synthesized, port: int) -> str:
    container = Match.object_like({"PortMappings": [Match.object_like({"ContainerPort": port})]})
    _, task = only(
        synthesized.template,
        "AWS::ECS::TaskDefinition",
        Match.object_like({"ContainerDefinitions": [container]}),
    )
    role: str = task["Properties"]["TaskRoleArn"]["Fn::GetAtt"][0]
    return role


def _function_role(synthesized: Synthesized, service: str) -> str:
    variables = Match.object_like({"Variables": Match.object_like({"POWERTOOLS_SERVICE_NAME": service})})
    _, function = only(
        synthesized.template, "AWS::Lambda::Function", Match.object_like({"Environment": variables})
    )
    role: str = function["Properties"]["Role"]["Fn::GetAtt"][0]
    return role


def _roles(synthesized: Synthesized) -> dict[str, str]:
    _, dicom_task = dicom_task_definition(synthesized.template)
    return {
        "dicom-listener": dicom_task["Properties"]["TaskRoleArn"]["Fn::GetAtt"][0],
        "hl7-listener": _task_role(synthesized, 2575),
        **{
            name: _function_role(synthesized, name)
            for name in EXPECTED
            if name not in ("dicom-listener", "hl7-listener")
        },
    }


def _tables(synthesized: Synthesized) -> dict[str, str]:
    """Logical table name -> the table's logical ID (through the variable the code reads)."""
    _, function = index_function(synthesized.template)
    variables = function["Properties"]["Environment"]["Variables"]
    return {name: variables[env]["Ref"] for name, env in TABLE_ENV.items()}


def _index_arn(table_id: str) -> dict[str, Any]:
    return {"Fn::Join": ["", [arn_of(table_id), "/index/*"]]}


@pytest.mark.parametrize("service", sorted(EXPECTED))
def test_each_service_gets_only_the_tables_and_actions_it_uses(production: Synthesized, service: str) -> None:
    # Given the service's role and every table of the stack
    statements = statements_of_role(production.template, _roles(production)[service])
    tables = _tables(production)
    assert len(tables) == len(resources(production.template, "AWS::DynamoDB::Table"))
    # When we collect what the role may do on each table
    granted = {name: actions_on(statements, arn_of(table_id)) for name, table_id in tables.items()}
    # Then it is exactly the expected tables, each with exactly the expected actions
    assert {name: actions for name, actions in granted.items() if actions} == EXPECTED[service]
    # And the same on their secondary indexes (where they have any), never more
    template = production.template.to_json()["Resources"]
    for name in EXPECTED[service]:
        table_id = tables[name]
        if template[table_id]["Properties"].get("GlobalSecondaryIndexes"):
            assert actions_on(statements, _index_arn(table_id)) == EXPECTED[service][name], name


def test_the_dicom_listener_cannot_write_the_configuration(production: Synthesized) -> None:
    statements = statements_of_role(production.template, _roles(production)["dicom-listener"])
    tables = _tables(production)
    for name in CONFIGURATION:
        for resource in (arn_of(tables[name]), _index_arn(tables[name])):
            assert not WRITES & actions_on(statements, resource), name


def test_no_role_may_scan_or_batch_write_and_only_the_registry_writer_delete(production: Synthesized) -> None:
    # Scans, batch writes and deletions are the operator's (admin CLI), with one exception: the
    # registration of a study undoes its own XDS registry entries when it fails half-way
    forbidden = {"dynamodb:Scan", "dynamodb:BatchWriteItem", "dynamodb:*"}
    registry_arns = {json.dumps(arn_of(_tables(production)["xds_registry"]))}
    for policy_id, policy in resources(production.template, "AWS::IAM::Policy").items():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            assert not forbidden & set(actions), policy_id
            if "dynamodb:DeleteItem" in actions:
                targets = (
                    statement["Resource"]
                    if isinstance(statement["Resource"], list)
                    else [statement["Resource"]]
                )
                assert json.dumps(targets[0]) in registry_arns, policy_id
    deleters = [
        name
        for name, role in _roles(production).items()
        if "dynamodb:DeleteItem" in all_actions(statements_of_role(production.template, role))
    ]
    assert deleters == ["register-study"]
