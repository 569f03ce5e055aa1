"""The index Lambda: how it is fed, what it runs on, what it may touch."""

from __future__ import annotations

from pathlib import Path

from archive.topology import TABLE_ENV
from aws_cdk import aws_lambda as lambda_
from aws_cdk.assertions import Match

from infrastructure.layers import PipLocalBundling, pip_install_args
from tests.infrastructure.conftest import Synthesized
from tests.infrastructure.template_queries import (
    actions_on,
    all_actions,
    archive_bucket,
    arn_of,
    index_function,
    index_queue,
    objects_of,
    only,
    ref,
    resources,
    statements_of_role,
)


def test_runs_python_311_on_arm_with_the_core_and_deps_layers(production: Synthesized) -> None:
    _, function = index_function(production.template)
    props = function["Properties"]

    assert props["Runtime"] == "python3.11"
    assert props["Architectures"] == ["arm64"]
    assert props["TracingConfig"] == {"Mode": "Active"}
    layers = resources(production.template, "AWS::Lambda::LayerVersion")
    assert sorted(layer["Ref"] for layer in props["Layers"]) == sorted(layers)
    for layer in layers.values():
        assert layer["Properties"]["CompatibleRuntimes"] == ["python3.11"]
        assert layer["Properties"]["CompatibleArchitectures"] == ["arm64"]


def test_environment_names_the_bucket_every_table_and_the_ae_title(production: Synthesized) -> None:
    bucket_id, _ = archive_bucket(production.template)
    _, function = index_function(production.template)
    env = function["Properties"]["Environment"]["Variables"]

    assert env["ARCHIVE_BUCKET"] == ref(bucket_id)
    assert env["ARCHIVE_AE_TITLE"] == "ARCHIVE"
    assert set(TABLE_ENV.values()) <= set(env)
    assert env["POWERTOOLS_SERVICE_NAME"]
    assert env["POWERTOOLS_LOGGER_LOG_EVENT"] == "false"


def test_is_fed_by_the_index_queue_in_batches_with_partial_failures(production: Synthesized) -> None:
    # Given the index function and the queue the bucket notifies
    function_id, _ = index_function(production.template)
    queue_id, _ = index_queue(production.template)

    # Then one event source mapping connects them, reporting failed records one by one
    _, mapping = only(
        production.template,
        "AWS::Lambda::EventSourceMapping",
        Match.object_like({"FunctionName": ref(function_id)}),
    )
    props = mapping["Properties"]
    assert props["EventSourceArn"] == arn_of(queue_id)
    assert props["BatchSize"] == 10
    assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]

    # And a message stays invisible long enough for the function to finish it
    queue = production.template.to_json()["Resources"][queue_id]
    function = production.template.to_json()["Resources"][function_id]
    assert queue["Properties"]["VisibilityTimeout"] >= 6 * function["Properties"]["Timeout"]


def test_may_read_objects_and_only_turn_a_legal_hold_on(production: Synthesized) -> None:
    # Given the function's role and the archive bucket
    bucket_id, _ = archive_bucket(production.template)
    _, function = index_function(production.template)
    role_id = function["Properties"]["Role"]["Fn::GetAtt"][0]
    statements = statements_of_role(production.template, role_id)

    # Then it may read objects, their versions and checksums, and list the bucket
    assert actions_on(statements, objects_of(bucket_id)) >= {
        "s3:GetObject",
        "s3:GetObjectVersion",
        "s3:GetObjectAttributes",
        "s3:GetObjectVersionAttributes",
    }
    assert "s3:ListBucket" in actions_on(statements, arn_of(bucket_id))
    # And nothing that changes the archive's objects, except turning a legal hold ON (an object
    # stored into a study just held: docs/retention.md), never off
    assert not {
        a
        for a in all_actions(statements)
        if a.startswith("s3:") and ("Put" in a or "Delete" in a) and a != "s3:PutObjectLegalHold"
    }
    held = [s for s in statements if "s3:PutObjectLegalHold" in all_actions([s])]
    assert held and all(s["Condition"] == {"StringEquals": {"s3:object-lock-legal-hold": "ON"}} for s in held)


def test_may_write_the_index_but_not_the_configuration_or_the_records(production: Synthesized) -> None:
    _, function = index_function(production.template)
    role_id = function["Properties"]["Role"]["Fn::GetAtt"][0]
    statements = statements_of_role(production.template, role_id)

    variables = function["Properties"]["Environment"]["Variables"]

    def granted(name: str) -> set[str]:
        return actions_on(statements, arn_of(variables[TABLE_ENV[name]]["Ref"]))

    for name in ("patients", "studies", "series", "instances"):
        assert {"dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:Query"} <= granted(name), name
    # (the whole matrix: tests/infrastructure/test_least_privilege.py)
    for name in ("organisations", "application_entities", "access_log", "patient_history", "commitments"):
        assert not granted(name), name


def test_logs_to_its_own_log_group_with_retention(production: Synthesized) -> None:
    _, function = index_function(production.template)
    log_group_ref = function["Properties"]["LoggingConfig"]["LogGroup"]
    log_group = production.template.to_json()["Resources"][log_group_ref["Ref"]]
    assert log_group["Properties"]["RetentionInDays"] > 0


def test_deps_layer_is_built_from_lambda_wheels_whatever_machine_bundles_it() -> None:
    # Given the Lambda's runtime and architecture
    args = pip_install_args(
        runtime=lambda_.Runtime.PYTHON_3_11, architecture=lambda_.Architecture.ARM_64, target="/out/python"
    )

    # Then pip fetches only binary wheels for that Python and CPU into the layer's python/ folder
    assert args[args.index("--platform") + 1] == "manylinux2014_aarch64"
    assert args[args.index("--python-version") + 1] == "3.11"
    assert args[args.index("--target") + 1] == "/out/python"
    assert "--only-binary=:all:" in args


def test_local_bundling_gives_way_to_docker_when_pip_fails(tmp_path: Path) -> None:
    # Given a folder without a requirements.txt, so pip cannot succeed
    bundling = PipLocalBundling(
        source_dir=tmp_path, runtime=lambda_.Runtime.PYTHON_3_11, architecture=lambda_.Architecture.ARM_64
    )

    # When CDK asks it to bundle
    bundled = bundling.try_bundle(str(tmp_path / "out"), image=lambda_.Runtime.PYTHON_3_11.bundling_image)

    # Then it reports failure, and CDK falls back to the Docker image
    assert bundled is False
