"""The DynamoDB tables, built from the same pynamodb models the code and the local cloud use."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from archive.data.schema import KeySpec, TableSpec
from aws_cdk import RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import Construct

from infrastructure.nag import acknowledge, arn_reference
from infrastructure.table_access import Access, TableAccess

_ATTRIBUTE_TYPES = {
    "S": dynamodb.AttributeType.STRING,
    "N": dynamodb.AttributeType.NUMBER,
    "B": dynamodb.AttributeType.BINARY,
}
_PROJECTIONS = {
    "ALL": dynamodb.ProjectionType.ALL,
    "KEYS_ONLY": dynamodb.ProjectionType.KEYS_ONLY,
}


def _attribute(key: KeySpec | None) -> dynamodb.Attribute | None:
    if key is None:
        return None
    return dynamodb.Attribute(name=key.name, type=_ATTRIBUTE_TYPES[key.type])


class ArchiveTables(Construct):
    """One on-demand table per spec, with PITR, a customer managed key and deletion protection;
    the tables named in ``infrequent_access`` in the Standard-Infrequent-Access table class.

    Key schemas and indexes come only from ``specs``; nothing about a table's keys is written here.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        specs: Sequence[TableSpec],
        env_vars: Mapping[str, str],
        infrequent_access: Collection[str] = (),
    ) -> None:
        super().__init__(scope, construct_id)
        missing = [spec.logical_name for spec in specs if spec.logical_name not in env_vars]
        if missing:
            raise ValueError(f"no environment variable for table(s): {', '.join(missing)}")
        unknown = set(infrequent_access) - {spec.logical_name for spec in specs}
        if unknown:
            raise ValueError(
                f"no such table(s) for the infrequent access class: {', '.join(sorted(unknown))}"
            )
        self.key = kms.Key(
            self,
            "Key",
            description="Encrypts the archive's index and configuration tables",
            enable_key_rotation=True,
            removal_policy=RemovalPolicy.RETAIN,
        )
        self.tables: dict[str, dynamodb.Table] = {}
        self._indexed: dict[str, bool] = {}
        self._append_only: set[str] = {spec.logical_name for spec in specs if spec.append_only}
        for spec in specs:
            partition_key = _attribute(spec.partition_key)
            assert partition_key is not None
            table = dynamodb.Table(
                self,
                spec.logical_name,
                partition_key=partition_key,
                sort_key=_attribute(spec.sort_key),
                billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
                table_class=(
                    dynamodb.TableClass.STANDARD_INFREQUENT_ACCESS
                    if spec.logical_name in infrequent_access
                    else dynamodb.TableClass.STANDARD
                ),
                point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                    point_in_time_recovery_enabled=True
                ),
                encryption=dynamodb.TableEncryption.CUSTOMER_MANAGED,
                encryption_key=self.key,
                deletion_protection=True,
                removal_policy=RemovalPolicy.RETAIN,
            )
            for index in spec.indexes:
                index_partition_key = _attribute(index.partition_key)
                assert index_partition_key is not None
                table.add_global_secondary_index(
                    index_name=index.name,
                    partition_key=index_partition_key,
                    sort_key=_attribute(index.sort_key),
                    projection_type=_PROJECTIONS[index.projection],
                )
            self.tables[spec.logical_name] = table
            self._indexed[spec.logical_name] = bool(spec.indexes)
        self.environment = {env_vars[name]: table.table_name for name, table in self.tables.items()}

    def grant(self, grantee: iam.IRole, access: TableAccess) -> None:
        """Grant ``grantee`` the tables in ``access``, each with its kind of access, and nothing else.

        A table's grant covers its secondary indexes; the tables' key is granted to decrypt, and to
        encrypt as well where anything is written. WRITE or OWN on an append-only table is refused.
        """
        unknown = set(access) - set(self.tables)
        if unknown:
            raise ValueError(f"no such table(s): {', '.join(sorted(unknown))}")
        for name, kind in access.items():
            if name in self._append_only and kind not in (Access.READ, Access.APPEND):
                raise ValueError(f"{name} is append-only: grant it READ or APPEND, not {kind.name}")
            self.tables[name].grant(grantee, *kind.actions)
        writes = any(kind.writes for kind in access.values())
        if writes:
            self.key.grant_encrypt_decrypt(grantee)
        else:
            self.key.grant_decrypt(grantee)
        self._acknowledge_grants(grantee, [name for name in access if self._indexed[name]], writes=writes)

    def _acknowledge_grants(self, grantee: iam.IRole, indexed: list[str], *, writes: bool) -> None:
        if writes:
            acknowledge(
                grantee,
                "AwsSolutions-IAM5",
                "CDK's encrypt/decrypt grant on the tables' own key: the resource is that one key; "
                "the wildcards only cover variants of the same operation.",
                findings=("Action::kms:GenerateDataKey*", "Action::kms:ReEncrypt*"),
            )
        if indexed:
            acknowledge(
                grantee,
                "AwsSolutions-IAM5",
                "Queries go through the tables' secondary indexes, which IAM addresses only as "
                "<table>/index/*; the grant is limited to the archive tables this service uses.",
                findings=tuple(f"Resource::{arn_reference(self.tables[name])}/index/*" for name in indexed),
            )
