"""TLS material from AWS Secrets Manager, versioned so that a rotation is noticed cheaply.

The secret's value is JSON: ``{"certificate_chain": PEM, "private_key": PEM, "ca_bundle": PEM}``
(the archive's certificate with its intermediates, its key, and the customers' CAs a peer must
chain to). Rotation = ``put-secret-value`` with the new material; listeners see the new
AWSCURRENT version at their next check (``archive.tls.rotation``) without a redeploy.
"""

from __future__ import annotations

import json
from functools import cached_property
from typing import Any

import boto3

from archive.config import Settings
from archive.tls.contexts import TlsMaterial

CURRENT = "AWSCURRENT"
FIELDS = ("certificate_chain", "private_key", "ca_bundle")


class SecretTlsMaterial:
    """A ``archive.tls.rotation.MaterialSource`` backed by one Secrets Manager secret."""

    def __init__(self, settings: Settings, secret_id: str, client: Any | None = None) -> None:
        self._settings = settings
        self._secret_id = secret_id
        self._client = client

    @cached_property
    def client(self) -> Any:
        if self._client is not None:
            return self._client
        return boto3.client(
            "secretsmanager", region_name=self._settings.region, endpoint_url=self._settings.endpoint_url
        )

    def current_version(self) -> str:
        stages = self.client.describe_secret(SecretId=self._secret_id).get("VersionIdsToStages", {})
        return next((version for version, names in stages.items() if CURRENT in names), "")

    def load(self) -> TlsMaterial:
        response = self.client.get_secret_value(SecretId=self._secret_id, VersionStage=CURRENT)
        value = json.loads(response["SecretString"])
        missing = [f for f in FIELDS if not value.get(f)]
        if missing:
            raise ValueError(f"TLS secret {self._secret_id} lacks {', '.join(missing)}")
        return TlsMaterial(
            value["certificate_chain"], value["private_key"], value["ca_bundle"], response["VersionId"]
        )


def tls_secret_value(certificate_chain: str, private_key: str, ca_bundle: str) -> str:
    """The secret string ``SecretTlsMaterial`` reads (for the local cloud and operators' tooling)."""
    return json.dumps(
        {"certificate_chain": certificate_chain, "private_key": private_key, "ca_bundle": ca_bundle}
    )
