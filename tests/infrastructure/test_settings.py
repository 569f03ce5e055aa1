"""What an operator may choose per stack, and what is refused before anything is synthesized."""

from __future__ import annotations

import pytest
from aws_cdk import App

from infrastructure.settings import DeploymentSettings, ObjectLockMode


def test_defaults_are_production_grade() -> None:
    # Given no context at all
    # When the settings are read
    settings = DeploymentSettings.from_context(App().node)

    # Then the stack is a production one with ten years of COMPLIANCE retention
    assert settings.stage == "production"
    assert settings.object_lock_mode is ObjectLockMode.COMPLIANCE
    assert settings.retention_days == 3650
    assert not settings.is_dev
    assert not settings.listener_tls
    assert settings.audit_retention_days >= 12 * 365


def test_context_values_given_with_dash_c_arrive_as_strings_and_are_parsed() -> None:
    # Given context as `cdk deploy -c key=value` passes it
    app = App(
        context={
            "stage": "dev-alice",
            "objectLockMode": "governance",
            "retentionDays": "7",
            "clientCidrs": "192.0.2.0/24, 10.20.0.0/16",
            "listenerTls": "true",
            "auditSyslogHost": "audit.example.org",
            "auditSyslogPort": "6514",
        }
    )

    # When the settings are read
    settings = DeploymentSettings.from_context(app.node)

    # Then they are typed
    assert settings.object_lock_mode is ObjectLockMode.GOVERNANCE
    assert settings.retention_days == 7
    assert settings.client_cidrs == ("192.0.2.0/24", "10.20.0.0/16")
    assert settings.stack_name == "ImagingArchive-dev-alice"
    assert settings.listener_tls is True
    assert (settings.audit_syslog_host, settings.audit_syslog_port) == ("audit.example.org", 6514)


@pytest.mark.parametrize("stage", ["production", "staging", "developer"])
def test_governance_retention_is_refused_for_anything_but_dev_stacks(stage: str) -> None:
    # Given a stack that is not a dev stack
    # When GOVERNANCE retention is asked for
    # Then synth stops before building anything
    with pytest.raises(ValueError, match="GOVERNANCE is only allowed for dev stacks"):
        DeploymentSettings(stage=stage, object_lock_mode=ObjectLockMode.GOVERNANCE)


@pytest.mark.parametrize("stage", ["dev", "dev-bob"])
def test_governance_retention_is_allowed_for_dev_stacks(stage: str) -> None:
    settings = DeploymentSettings(stage=stage, object_lock_mode=ObjectLockMode.GOVERNANCE)
    assert settings.is_dev


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("retention_days", 0),
        ("stage", "Prod_1"),
        ("client_cidrs", ("10.0.0.1/16",)),
        ("vpc_cidr", "not-a-network"),
    ],
)
def test_invalid_values_are_refused(field: str, value: object) -> None:
    with pytest.raises(ValueError):
        DeploymentSettings(**{field: value})  # type: ignore[arg-type]


def test_unknown_object_lock_mode_is_refused() -> None:
    with pytest.raises(ValueError):
        DeploymentSettings.from_context(App(context={"objectLockMode": "LEGAL_HOLD"}).node)


CERTIFICATE = "arn:aws:acm:eu-north-1:111122223333:certificate/0f6c1f4e"


@pytest.mark.parametrize("key", ["dicomCertificateArn", "hl7CertificateArn"])
def test_load_balancer_certificates_are_refused_with_the_reason(key: str) -> None:
    # Given a context from before TLS moved into the containers
    app = App(context={key: CERTIFICATE})
    # Then synth says where TLS went instead of silently ignoring it
    with pytest.raises(ValueError, match="listenerTls=true"):
        DeploymentSettings.from_context(app.node)


def test_syslog_forwarding_needs_the_archives_tls_material() -> None:
    with pytest.raises(ValueError, match="auditSyslogHost needs listenerTls"):
        DeploymentSettings(audit_syslog_host="audit.example.org")


def test_the_customer_api_domain_needs_its_certificate() -> None:
    with pytest.raises(ValueError, match="together"):
        DeploymentSettings(xds_domain_name="xds.example.org")


def test_load_balancers_face_the_internet_only_when_a_public_network_may_connect() -> None:
    # Given client networks that are all private (VPN / Transit Gateway)
    private = DeploymentSettings(client_cidrs=("10.20.0.0/16", "172.16.0.0/12"))
    # And one that includes a public range
    public = DeploymentSettings(client_cidrs=("10.20.0.0/16", "198.51.100.0/24"), listener_tls=True)

    # Then only the second is internet-facing, and both always admit the VPC itself
    assert not private.listeners_internet_facing
    assert public.listeners_internet_facing
    assert public.listener_client_cidrs[0] == public.vpc_cidr


def test_public_client_networks_need_a_tls_certificate() -> None:
    # Given a public client network and no certificate
    # Then plain DICOM would cross the internet, and synth refuses
    with pytest.raises(ValueError, match="DICOM without TLS"):
        DeploymentSettings(client_cidrs=("198.51.100.0/24",))


def test_lifecycle_tiers_restore_tier_and_days_are_chosen_per_stack() -> None:
    # Given no context, then a stack that keeps only Glacier Flexible Retrieval after half a year
    default = DeploymentSettings.from_context(App().node)
    chosen = DeploymentSettings.from_context(
        App(context={"instanceTiers": "glacier:180", "restoreTier": "Standard", "restoreDays": "2"}).node
    )
    none = DeploymentSettings.from_context(App(context={"instanceTiers": "none"}).node)

    # Then the default is Glacier IR after 90 days and Deep Archive after two years, restored Bulk
    assert default.instance_tiers == (("GLACIER_IR", 90), ("DEEP_ARCHIVE", 730))
    assert (default.restore_tier, default.restore_days) == ("Bulk", 7)
    # And the context replaces it (class names in any case), or switches tiers off
    assert chosen.instance_tiers == (("GLACIER", 180),)
    assert (chosen.restore_tier, chosen.restore_days) == ("Standard", 2)
    assert none.instance_tiers == ()


@pytest.mark.parametrize(
    ("tiers", "message"),
    [
        ("DEEP_ARCHIVE:730,GLACIER_IR:90", "later and later"),
        ("STANDARD_IA:10", "later and later"),
        ("ONEZONE_IA:30", "unknown class"),
        ("GLACIER_IR", "CLASS:DAYS"),
    ],
)
def test_lifecycle_tiers_out_of_order_or_unknown_are_refused(tiers: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DeploymentSettings.from_context(App(context={"instanceTiers": tiers}).node)


def test_restore_tier_must_be_bulk_or_standard() -> None:
    with pytest.raises(ValueError, match="Bulk or Standard"):
        DeploymentSettings(restore_tier="Expedited")
