"""The listeners' TLS material in Secrets Manager: the archive's certificate chain and key and the
bundle of customers' CAs, as JSON (``archive.data.secrets``)."""

from __future__ import annotations

from aws_cdk import CfnOutput, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from infrastructure.nag import acknowledge


class TlsSecret(Construct):
    """Created with a placeholder value; the operator puts the real material (and every later
    rotation) with ``aws secretsmanager put-secret-value``; listeners reload it without a redeploy
    (docs/security.md)."""

    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        self.key = kms.Key(
            self,
            "Key",
            description="Encrypts the imaging archive's TLS private key and certificates",
            enable_key_rotation=True,
            removal_policy=RemovalPolicy.RETAIN,
        )
        self.secret = secretsmanager.Secret(
            self,
            "Secret",
            description="Imaging archive TLS material: JSON with certificate_chain, private_key, ca_bundle (PEM)",
            encryption_key=self.key,
            removal_policy=RemovalPolicy.RETAIN,
        )
        acknowledge(
            self.secret,
            "AwsSolutions-SMG4",
            "The secret holds an X.509 certificate and key issued by a CA, which a rotation Lambda cannot "
            "obtain; the operator puts each renewed certificate as a new version and the listeners "
            "reload it within TLS_CHECK_SECONDS, without a redeploy.",
        )
        CfnOutput(self, "SecretArn", value=self.secret.secret_arn, description="Put the TLS material here")

    def grant_read(self, grantee: iam.IRole) -> None:
        self.secret.grant_read(grantee)
