"""Which organisation (and AE) a certificate identifies, read from real certificates."""

from __future__ import annotations

from pathlib import Path

import pytest
from archive.model.certificates import Binding, CertificateIdentity, identifies, identifies_xua_organisation
from archive.tls.peer import identity_from_pem

from local.pki import CertificateAuthority

ORG = "1.2.246.10.12345678.10"
OTHER = "1.2.246.10.87654321.10"


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority(tmp_path_factory.mktemp("ca"))


def identity(ca: CertificateAuthority, tmp: Path, **kwargs: object) -> CertificateIdentity:
    return identity_from_pem(ca.issue("leaf", directory=tmp, **kwargs).certificate_pem)  # type: ignore[arg-type]


def test_names_are_read_from_subject_and_subject_alternative_names(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    got = identity(
        ca,
        tmp_path,
        common_name="pacs.example.fi",
        organisation="Example",
        organisation_oid=ORG,
        dns=("pacs.example.fi",),
        ips=("10.0.0.5",),
    )

    assert got.names == {
        "CN=pacs.example.fi",
        "O=Example",
        "DNS:pacs.example.fi",
        "IP:10.0.0.5",
        f"URI:urn:oid:{ORG}",
    }
    assert got.organisation_oids == {ORG}
    assert "CN=Demo Imaging Archive CA" in got.issuer
    assert len(got.fingerprint_sha256) == 64


def test_a_certificate_with_the_organisations_oid_identifies_it_and_no_other(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    got = identity(ca, tmp_path, common_name="pacs", organisation_oid=ORG)

    assert identifies(got, Binding(ORG)).accepted
    refused = identifies(got, Binding(OTHER, frozenset({"CN=pacs"})))
    assert not refused.accepted
    assert ORG in refused.reason and OTHER in refused.reason


def test_without_an_oid_a_registered_name_identifies_the_organisation(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    got = identity(ca, tmp_path, common_name="ris.example.fi", dns=("ris.example.fi",))

    assert identifies(got, Binding(ORG, frozenset({"DNS:ris.example.fi"}))).accepted
    assert not identifies(got, Binding(ORG)).accepted
    assert not identifies(got, Binding(ORG, frozenset({"DNS:other.example.fi"}))).accepted


def test_names_registered_for_an_ae_narrow_the_organisation_to_that_node(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    modality = identity(ca, tmp_path, common_name="ct1.example.fi", organisation_oid=ORG)
    binding = Binding(ORG, node="PACS", node_certificate_names=frozenset({"CN=pacs.example.fi"}))

    verdict = identifies(modality, binding)

    assert not verdict.accepted
    assert "PACS" in verdict.reason
    assert identifies(
        modality, Binding(ORG, node="CT1", node_certificate_names=frozenset({"CN=ct1.example.fi"}))
    )


@pytest.mark.parametrize(
    ("xua", "accepted"),
    [(f"urn:oid:{ORG}", True), (ORG, True), (f"urn:oid:{OTHER}", False), ("Example Hospital", False)],
)
def test_the_xua_organisation_id_must_be_the_client_certificates_organisation(
    ca: CertificateAuthority, tmp_path: Path, xua: str, accepted: bool
) -> None:
    got = identity(ca, tmp_path, common_name="xds-consumer", organisation_oid=ORG)

    assert identifies_xua_organisation(got, xua).accepted is accepted
