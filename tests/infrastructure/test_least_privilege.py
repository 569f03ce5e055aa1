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
    arn_of,
    index_function,
    resources,
    statements_of_role,
)

READ = frozenset(
    {"dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query", "dynamodb:ConditionCheckItem"}
)
APPEND = READ | {"dynamodb:PutItem"}
WRITE = APPEND | {"dynamodb:UpdateItem"}

OWN = WRITE | {"dynamodb:DeleteItem"}
REMOVE = READ | {"dynamodb:DeleteItem"}
# Asking for a study's registration: the organisation's settings and the study's schedule.
REQUESTS_REGISTRATION = {"registration_config": READ, "registrations": WRITE}
READS_STUDY_CONTENT = {"patients": READ, "studies": READ, "series": READ, "instances": READ}

EXPECTED: dict[str, dict[str, frozenset[str]]] = {
    "dicom-listener": {
        "organisations": READ,
        "application_entities": READ,
        "patients": READ,
        "studies": WRITE,  # claims a study for its patient before a C-STORE is acknowledged
        "series": WRITE,  # an IOCM rejection note hides instances, and their series' counts change
        "instances": WRITE,
        "rejections": WRITE,
        "retention_rules": READ,  # the Object Lock of each PUT
        "legal_holds": READ,  # an object stored into a held study is held from its PUT
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
    "hl7-listener": {
        "organisations": READ,
        "hl7_facilities": READ,
        "patients": READ,
        "studies": READ,  # which organisations control the identity's studies
        "patient_history": READ,  # was this sender + MSH-10 handled before
    },
    "patient-update": {
        "patients": WRITE,
        "studies": WRITE,
        "patient_history": APPEND,
        "retention_jobs": APPEND,  # a death recorded or retracted (PID-29/30) starts a job
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
        "organisations": READ,  # certificate names for IAN over TLS
        "application_entities": READ,
        "registration_config": READ,
        "ian_notifications": WRITE,
    },
    # Storage tiers: availability and NEARLINE counts from S3's events; the restores' IANs
    "storage-events": {
        "studies": WRITE,
        "series": WRITE,
        "instances": WRITE,
        "ian_notifications": APPEND,
    },
    "restore-study": {"studies": WRITE, "instances": READ},
    # Retention jobs: raises studies' retention ends (never writes series or instances), counts pages
    "extend-retention": {
        "patients": READ,  # the death and birth a death rule counts from
        "studies": WRITE,
        "series": READ,
        "instances": READ,
        "retention_rules": READ,
        "retention_jobs": WRITE,
        "xds_registry": READ,  # the studies' manifests, lengthened with them
    },
    # Deletes the index entries of studies whose retention ended, never writes them
    "destroy-expired": {
        "retention_rules": READ,  # which rules want an approval, and what the record names
        "studies": REMOVE,
        "series": REMOVE,
        "instances": REMOVE,
        "destruction_records": APPEND,
        "registrations": WRITE,
        "xds_registry": OWN,
    },
    "admin-api": {"patients": READ, "disclosure_log": READ},
    # Copies staged objects into the locked bucket: no table at all
    "lock-instance": {},
    "disclosure-anchor": {"disclosure_log": READ},
    "disclosure-notification": {
        "organisations": READ,
        "patients": READ,
        "studies": READ,
        "disclosure_log": APPEND,
    },
    # XDS: every read logged (access log), reads of another organisation's data in the chain
    "xds-registry": {
        "organisations": READ,  # client certificate against the XUA organisation-id
        "registration_config": READ,  # identity providers, document repositories, the archive
        "patients": READ,  # XDSUnknownPatientId
        "xds_registry": OWN,  # ITI-42; a registration that fails half-way is deleted again
        "access_log": APPEND,
        "disclosure_log": APPEND,
    },
    "xds-repository": {
        "organisations": READ,  # client certificate against the XUA organisation-id
        "registration_config": READ,
        "xds_registry": READ,
        "access_log": APPEND,
        "disclosure_log": APPEND,
    },
    "xds-imaging": {
        "organisations": READ,  # client certificate against the XUA organisation-id
        "registration_config": READ,
        "registrations": READ,  # the study's manifest, for denials
        "patients": READ,
        "studies": WRITE,  # NEARLINE instances: the study's restore request
        "instances": READ,
        "xds_registry": READ,  # denials
        "access_log": APPEND,
        "disclosure_log": APPEND,
    },
}
CONFIGURATION = ("organisations", "application_entities", "hl7_facilities")
WRITES = frozenset(
    {"dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem"}
)


def _service_env(service: str) -> Any:
    return Match.object_like({"Name": "POWERTOOLS_SERVICE_NAME", "Value": service})


def _role(synthesized: Synthesized, service: str) -> str:
    """The role of the listener task or Lambda function whose powertools service is ``service``."""
    tasks = resources(
        synthesized.template,
        "AWS::ECS::TaskDefinition",
        Match.object_like(
            {
                "ContainerDefinitions": [
                    Match.object_like({"Environment": Match.array_with([_service_env(service)])})
                ]
            }
        ),
    )
    functions = resources(
        synthesized.template,
        "AWS::Lambda::Function",
        Match.object_like(
            {"Environment": {"Variables": Match.object_like({"POWERTOOLS_SERVICE_NAME": service})}}
        ),
    )
    found = [t["Properties"]["TaskRoleArn"] for t in tasks.values()] + [
        f["Properties"]["Role"] for f in functions.values()
    ]
    assert len(found) == 1, f"{service}: {len(found)} roles"
    role: str = found[0]["Fn::GetAtt"][0]
    return role


def _roles(synthesized: Synthesized) -> dict[str, str]:
    return {service: _role(synthesized, service) for service in EXPECTED}


def _tables(synthesized: Synthesized) -> dict[str, str]:
    """Logical table name -> the table's logical ID (through the variable the code reads)."""
    _, function = index_function(synthesized.template)
    variables = function["Properties"]["Environment"]["Variables"]
    return {name: variables[env]["Ref"] for name, env in TABLE_ENV.items()}


def _index_arn(table_id: str) -> dict[str, Any]:
    return {"Fn::Join": ["", [arn_of(table_id), "/index/*"]]}


@pytest.mark.parametrize("service", sorted(EXPECTED))
def test_each_service_gets_only_the_tables_and_actions_it_uses(
    dev_with_tls: Synthesized, service: str
) -> None:
    # Given the service's role (in a stack with every optional part) and every table of the stack
    production = dev_with_tls
    statements = statements_of_role(production.template, _role(production, service))
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
    statements = statements_of_role(production.template, _role(production, "dicom-listener"))
    tables = _tables(production)
    for name in CONFIGURATION:
        for resource in (arn_of(tables[name]), _index_arn(tables[name])):
            assert not WRITES & actions_on(statements, resource), name


def test_no_role_may_scan_or_batch_write_and_only_three_may_delete(dev_with_tls: Synthesized) -> None:
    # Scans, batch writes and deletions are the operator's (admin CLI), with three exceptions: the
    # registration of a study and an ITI-42 registration undo their own XDS registry entries when
    # they fail half-way, and the destruction job removes the index entries of studies whose
    # retention has ended and, after the policy's delay, their Deprecated registry entries
    synthesized = dev_with_tls
    tables = _tables(synthesized)
    deletable = {
        "register-study": {json.dumps(arn_of(tables["xds_registry"]))},
        "xds-registry": {json.dumps(arn_of(tables["xds_registry"]))},
        "destroy-expired": {
            json.dumps(arn_of(tables[name])) for name in ("studies", "series", "instances", "xds_registry")
        },
    }
    forbidden = {"dynamodb:Scan", "dynamodb:BatchWriteItem", "dynamodb:*"}
    for policy_id, policy in resources(synthesized.template, "AWS::IAM::Policy").items():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            assert not forbidden & set(actions), policy_id
    for service, role in _roles(synthesized).items():
        statements = statements_of_role(synthesized.template, role)
        deleted_from = {
            json.dumps(resource)
            for statement in statements
            if "dynamodb:DeleteItem" in statement["Action"]
            for resource in (
                statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
            )
            if "/index/" not in json.dumps(resource)
        }
        assert deleted_from == deletable.get(service, set()), service
