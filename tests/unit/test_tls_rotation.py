"""TLS contexts follow the material's version: rebuilt when it changes, kept when the source fails."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from archive.tls.contexts import TlsMaterial
from archive.tls.rotation import RotatingTls

from local.pki import CertificateAuthority


class Source:
    """Material whose version the test changes (as a new Secrets Manager version would)."""

    def __init__(self, material: TlsMaterial) -> None:
        self.material = material
        self.loads = 0
        self.fail = False

    def current_version(self) -> str:
        if self.fail:
            raise ConnectionError("secrets manager unreachable")
        return self.material.version

    def load(self) -> TlsMaterial:
        self.loads += 1
        return self.material


@pytest.fixture
def material(tmp_path: Path) -> TlsMaterial:
    ca = CertificateAuthority(tmp_path)
    server = ca.archive_server()
    return TlsMaterial(server.certificate_pem, server.key_pem, ca.certificate_pem, "v1")


def test_contexts_are_rebuilt_only_when_the_version_changes_and_only_after_the_interval(
    material: TlsMaterial,
) -> None:
    now = [0.0]
    source = Source(material)
    tls = RotatingTls(source, check_seconds=60, clock=lambda: now[0])
    first = tls.server()
    assert first.minimum_version >= ssl.TLSVersion.TLSv1_2 and first.verify_mode is ssl.CERT_REQUIRED

    source.material = TlsMaterial(
        material.certificate_chain_pem, material.private_key_pem, material.ca_bundle_pem, "v2"
    )
    assert tls.server() is first  # within the interval: not even asked
    now[0] = 61
    assert tls.server() is not first and tls.version == "v2" and tls.reloads == 1
    now[0] = 200
    second = tls.server()
    assert tls.server() is second and source.loads == 2


def test_a_failing_source_keeps_the_last_good_contexts(material: TlsMaterial) -> None:
    now = [0.0]
    source = Source(material)
    tls = RotatingTls(source, check_seconds=1, clock=lambda: now[0])
    client = tls.client()
    source.fail = True
    now[0] = 5

    assert tls.client() is client and tls.version == "v1"
