"""XUA: SAML 2.0 assertions signed by a key and certificate the test makes, verified with signxml
against the registered identity provider; every failure is its own typed error; the public samples
are read."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from archive.errors import (
    AssertionAudienceMismatch,
    AssertionExpired,
    AssertionIncomplete,
    AssertionMissing,
    AssertionSignatureInvalid,
    AssertionUnsigned,
    SecurityTokenError,
    UntrustedIdentityProvider,
)
from archive.model.xds import Code
from archive.model.xua import IdentityProvider
from archive.xds import ns
from archive.xds.soap import fault_for, read_request
from archive.xds.xml import parse_xml
from archive.xds.xua import read_assertion, verify_assertion
from lxml import etree

from tests.support.xds import XDS
from tests.support.xua import AUDIENCE, make_identity_provider, security_header
from tests.support.xua import make_assertion as make_signed_assertion

IDP = make_identity_provider()
NOW = datetime.now(UTC)


def make_assertion(*args, **kw) -> etree._Element:
    """Assertions issued at the module's NOW, the time verify() checks against by default: a test
    that runs minutes after collection (a loaded machine) still sees them as fresh."""
    kw.setdefault("issued", NOW)
    return make_signed_assertion(*args, **kw)


def received(assertion: etree._Element | None) -> etree._Element:
    """The wsse:Security header as the archive receives it: serialized and parsed again."""
    return parse_xml(etree.tostring(security_header(assertion)))


def verify(security: etree._Element | None, providers=(IDP.registration,), now: datetime = NOW, **kw):
    return verify_assertion(security, providers=list(providers), audiences=[AUDIENCE], now=now, **kw)


def test_a_valid_assertion_gives_the_typed_user():
    user = verify(received(make_assertion(IDP, purpose="EMERGENCY")))
    assert user.issuer == IDP.issuer
    assert user.subject_id == "Gregory House"
    assert user.organization == "Demo Hospital"
    assert user.organization_id == "urn:oid:1.2.246.10.12345678.10"
    assert user.organization_oid == "1.2.246.10.12345678.10"
    assert user.roles == (Code("46255001", "2.16.840.1.113883.6.96", "Pharmacist"),)
    assert [p.code for p in user.purposes_of_use] == ["EMERGENCY"]
    assert user.resource_id == "020516C903K^^^&1.2.246.21&ISO"
    assert user.home_community_id == "urn:oid:1.2.246.10.99999999"
    assert user.audiences == (AUDIENCE,)


def test_missing_header_or_assertion():
    with pytest.raises(AssertionMissing):
        verify(None)
    with pytest.raises(AssertionMissing):
        verify(received(None))


def test_unsigned_assertion():
    with pytest.raises(AssertionUnsigned):
        verify(received(make_assertion(IDP, sign=False)))


@pytest.mark.parametrize(
    "tamper",
    [
        # another patient
        lambda a: _attribute(a, "urn:oasis:names:tc:xacml:2.0:resource:resource-id").__setattr__(
            "text", "999^^^&1.2.246.21&ISO"
        ),
        # a longer life
        lambda a: a.find(f"{{{ns.SAML}}}Conditions").set("NotOnOrAfter", "2999-01-01T00:00:00Z"),
        # another organisation
        lambda a: _attribute(a, "urn:oasis:names:tc:xspa:1.0:subject:organization-id").__setattr__(
            "text", "urn:oid:1.2.3"
        ),
    ],
)
def test_tampered_assertion(tamper):
    assertion = make_assertion(IDP)
    tamper(assertion)
    with pytest.raises(AssertionSignatureInvalid):
        verify(received(assertion))


def test_signed_by_another_key_under_the_same_issuer_name():
    impostor = make_identity_provider(IDP.issuer)
    with pytest.raises(AssertionSignatureInvalid):
        verify(received(make_assertion(impostor)))


def test_key_rollover_accepts_either_registered_certificate():
    newer = make_identity_provider(IDP.issuer)
    both = IdentityProvider(IDP.issuer, (IDP.cert_pem.decode(), newer.cert_pem.decode()))
    assert verify(received(make_assertion(newer)), providers=[both]).issuer == IDP.issuer


def test_unregistered_issuer():
    with pytest.raises(UntrustedIdentityProvider):
        verify(received(make_assertion(IDP, issuer="https://evil.example/sts")))


def test_expired_and_not_yet_valid():
    with pytest.raises(AssertionExpired):
        verify(received(make_assertion(IDP, issued=NOW - timedelta(hours=1))))
    with pytest.raises(AssertionExpired):
        verify(received(make_assertion(IDP, issued=NOW + timedelta(hours=1))))
    # Within the clock skew: accepted
    assert verify(
        received(make_assertion(IDP, issued=NOW - timedelta(minutes=5), lifetime=timedelta(minutes=4))),
        clock_skew=timedelta(minutes=2),
    )


def test_other_audience():
    with pytest.raises(AssertionAudienceMismatch):
        verify(received(make_assertion(IDP, audience="urn:other-service")))


def test_missing_required_attribute():
    assertion = make_assertion(IDP, organization_id="")
    with pytest.raises(AssertionIncomplete):
        verify(received(assertion))


def test_a_second_unsigned_assertion_beside_the_signed_one_is_refused():
    security = received(make_assertion(IDP))
    security.append(parse_xml(etree.tostring(make_assertion(IDP, sign=False))))
    with pytest.raises(AssertionIncomplete):
        verify(security)


def test_signature_wrapping_is_refused():
    # Given a forged assertion for another patient that carries the genuine signed assertion inside
    # (saml:Advice) and the genuine Signature, whose Reference still points at the genuine one
    genuine = parse_xml(etree.tostring(make_assertion(IDP)))
    forged = parse_xml(etree.tostring(make_assertion(IDP, sign=False, resource_id="999^^^&1.2.246.21&ISO")))
    forged.insert(1, genuine.find(ns.q(ns.DS, "Signature")))  # moved: the genuine digest still holds
    advice = etree.SubElement(forged, ns.q(ns.SAML, "Advice"))
    advice.append(genuine)
    # When it is verified, Then the valid signature does not vouch for the forged attributes
    with pytest.raises(AssertionSignatureInvalid):
        verify(received(forged))


def test_every_xua_failure_maps_to_a_ws_security_fault():
    for error in (
        AssertionMissing("x"),
        AssertionUnsigned("x"),
        AssertionExpired("x"),
        UntrustedIdentityProvider("x"),
    ):
        fault = fault_for(error)
        assert isinstance(error, SecurityTokenError)
        assert fault.code == "Sender" and fault.subcode is not None and fault.subcode[0] == ns.WSSE


def test_public_ipf_sample_is_read():
    security = parse_xml((XDS / "saml2-assertion-for-xua.xml").read_bytes())
    user = read_assertion(security.find(f"{{{ns.SAML}}}Assertion"))
    assert user.issuer == "demo.com"
    assert user.subject_name_id == "lipse"
    # subject-id of the AttributeStatement, not the one inside SubjectConfirmationData
    assert user.subject_id == "Dr. Klaus-Peter Kohlrabi"
    # HL7 v3 Role values only (the Garbage and the PurposeOfUse inside the role attribute are skipped)
    assert [r.code for r in user.roles] == ["ELE", "HCP", "GYN"]
    assert [p.code for p in user.purposes_of_use] == ["12", "13", "14", "15"]
    assert user.resource_id == "543797436^^^&1.2.840.113619.6.197&ISO"
    assert user.audiences == ("http://blabla",)
    assert user.not_on_or_after == datetime(2011, 3, 29, 9, 54, 40, tzinfo=UTC)
    # Its certificate is elided in the sample, so it cannot be trusted for anything
    with pytest.raises(UntrustedIdentityProvider):
        verify(security)


def test_public_swiss_epr_assertion_is_read_and_its_age_refused():
    request = read_request((XDS / "ITI-18_request_raw.xml").read_bytes())
    assertion = request.security.find(f"{{{ns.SAML}}}Assertion")
    user = read_assertion(assertion)
    assert user.organization_oid == "1.3.6.1.4.1.21367.2017.2.6.19.100.2"
    assert [p.code for p in user.purposes_of_use] == ["EMER"]
    assert [r.code for r in user.roles] == ["HCP"]
    assert user.resource_id == "761337610410098484^^^SPID&2.16.756.5.30.1.127.3.10.3&ISO"
    # The published copy was re-indented after signing (SignedInfo and SignatureValue carry added
    # whitespace), so even its own certificate does not verify it: a modified document is refused.
    cert = "".join(assertion.findtext(".//{http://www.w3.org/2000/09/xmldsig#}X509Certificate").split())
    pem = f"-----BEGIN CERTIFICATE-----\n{cert}\n-----END CERTIFICATE-----\n"
    sts = IdentityProvider(user.issuer, (pem,))
    with pytest.raises(AssertionSignatureInvalid):
        verify_assertion(
            request.security,
            providers=[sts],
            audiences=list(user.audiences),
            now=datetime(2020, 9, 22, 11, 20, tzinfo=UTC),
            allow_sha1=True,
        )


def _attribute(assertion: etree._Element, name: str) -> etree._Element:
    return assertion.find(f".//{{{ns.SAML}}}Attribute[@Name='{name}']/{{{ns.SAML}}}AttributeValue")
