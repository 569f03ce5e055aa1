"""XUA: the SAML 2.0 assertion in the WS-Security header, verified and read.

:func:`verify_assertion` is what every request goes through: the assertion must be there, signed
(enveloped XML signature over the assertion itself, checked with signxml against the certificates
of the identity provider named in its Issuer, which must be registered), within its validity window
(with a small clock skew) and addressed to this archive (AudienceRestriction). Attributes are read
from the element the signature covers (signxml's ``signed_xml``), never from the received tree, so
a wrapped or duplicated assertion cannot smuggle unsigned attributes in.

:func:`read_assertion` only reads the attributes (no checks); it is what the verifier uses on the
signed element and what tests use on published samples whose certificate is not available.
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta

from lxml import etree
from signxml import DigestAlgorithm, SignatureConfiguration, SignatureMethod, XMLVerifier
from signxml.exceptions import InvalidCertificate, InvalidDigest, InvalidInput, InvalidSignature

from archive.errors import (
    AssertionAudienceMismatch,
    AssertionExpired,
    AssertionIncomplete,
    AssertionMissing,
    AssertionSignatureInvalid,
    AssertionUnsigned,
    UntrustedIdentityProvider,
)
from archive.model.xds import Code
from archive.model.xua import IdentityProvider, UserAssertion
from archive.xds import ns
from archive.xds.xml import text_of

SUBJECT_ID = "urn:oasis:names:tc:xspa:1.0:subject:subject-id"
ORGANIZATION = "urn:oasis:names:tc:xspa:1.0:subject:organization"
ORGANIZATION_ID = "urn:oasis:names:tc:xspa:1.0:subject:organization-id"
ROLE = "urn:oasis:names:tc:xacml:2.0:subject:role"
PURPOSE_OF_USE = "urn:oasis:names:tc:xspa:1.0:subject:purposeofuse"
RESOURCE_ID = "urn:oasis:names:tc:xacml:2.0:resource:resource-id"
HOME_COMMUNITY_ID = "urn:ihe:iti:xca:2010:homeCommunityId"

# Asymmetric signature methods only (an HMAC "signature" would need a shared secret), and no SHA-1
# unless a deployment explicitly allows it for an identity provider that still signs with it.
_STRONG = frozenset(m for m in SignatureMethod if not m.name.startswith("HMAC"))
_SHA1_METHODS = frozenset(m for m in SignatureMethod if "SHA1" in m.name)


def _saml(local: str) -> str:
    return ns.q(ns.SAML, local)


def _time(value: str | None, what: str) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise AssertionIncomplete(f"{what} {value!r} is not an xs:dateTime") from exc


def _coded(values: list[etree._Element], local: str) -> tuple[Code, ...]:
    """HL7 v3 CE values (``<Role code=... codeSystem=... displayName=.../>``) of the expected name."""
    codes = []
    for value in values:
        for child in value:
            if child.tag == ns.q(ns.HL7V3, local) and child.get("code"):
                codes.append(
                    Code(child.get("code", ""), child.get("codeSystem", ""), child.get("displayName", ""))
                )
    return tuple(codes)


def read_assertion(assertion: etree._Element) -> UserAssertion:
    """The XUA attributes of a saml:Assertion element (statements directly under the assertion)."""
    attributes: dict[str, list[etree._Element]] = {}
    for statement in assertion.findall(_saml("AttributeStatement")):
        for attribute in statement.findall(_saml("Attribute")):
            attributes.setdefault(attribute.get("Name", ""), []).extend(
                attribute.findall(_saml("AttributeValue"))
            )

    def text(name: str) -> str | None:
        return next((t for t in (text_of(v) for v in attributes.get(name, [])) if t), None)

    conditions = assertion.find(_saml("Conditions"))
    audiences: tuple[str, ...] = ()
    if conditions is not None:
        audiences = tuple(
            t
            for t in (
                text_of(a) for a in conditions.iterfind(f"{_saml('AudienceRestriction')}/{_saml('Audience')}")
            )
            if t
        )
    return UserAssertion(
        assertion_id=assertion.get("ID", ""),
        issuer=text_of(assertion.find(_saml("Issuer"))) or "",
        subject_name_id=text_of(assertion.find(f"{_saml('Subject')}/{_saml('NameID')}")),
        subject_id=text(SUBJECT_ID),
        organization=text(ORGANIZATION),
        organization_id=text(ORGANIZATION_ID),
        roles=_coded(attributes.get(ROLE, []), "Role"),
        purposes_of_use=_coded(attributes.get(PURPOSE_OF_USE, []), "PurposeOfUse"),
        resource_id=text(RESOURCE_ID),
        home_community_id=text(HOME_COMMUNITY_ID),
        not_before=None if conditions is None else _time(conditions.get("NotBefore"), "NotBefore"),
        not_on_or_after=None if conditions is None else _time(conditions.get("NotOnOrAfter"), "NotOnOrAfter"),
        audiences=audiences,
    )


def verify_assertion(
    security: etree._Element | None,
    *,
    providers: Sequence[IdentityProvider],
    audiences: Collection[str],
    now: datetime,
    clock_skew: timedelta = timedelta(minutes=2),
    allow_sha1: bool = False,
) -> UserAssertion:
    """Verify the assertion in a wsse:Security header and return who it vouches for.

    Raises AssertionMissing, AssertionUnsigned, UntrustedIdentityProvider, AssertionSignatureInvalid,
    AssertionExpired, AssertionAudienceMismatch or AssertionIncomplete.
    """
    if security is None:
        raise AssertionMissing("no wsse:Security header")
    assertions = security.findall(_saml("Assertion"))
    if not assertions:
        raise AssertionMissing("no SAML 2.0 assertion in wsse:Security")
    if len(assertions) > 1:
        raise AssertionIncomplete("more than one SAML assertion in wsse:Security")
    received = assertions[0]
    if received.find(ns.q(ns.DS, "Signature")) is None:
        raise AssertionUnsigned("the assertion is not signed")
    issuer = text_of(received.find(_saml("Issuer")))
    provider = next((p for p in providers if p.issuer == issuer), None)
    if provider is None or not provider.certificates:
        raise UntrustedIdentityProvider(f"identity provider {issuer!r} is not registered")
    signed = _verified(received, provider, allow_sha1=allow_sha1)
    if signed.tag != _saml("Assertion") or signed.get("ID") != received.get("ID"):
        raise AssertionSignatureInvalid("the signature does not cover the assertion")
    user = read_assertion(signed)
    if user.not_on_or_after is None:
        raise AssertionIncomplete("the assertion has no NotOnOrAfter")
    if user.not_before is not None and now + clock_skew < user.not_before:
        raise AssertionExpired(f"the assertion is valid only from {user.not_before.isoformat()}")
    if now - clock_skew >= user.not_on_or_after:
        raise AssertionExpired(f"the assertion expired at {user.not_on_or_after.isoformat()}")
    if not set(user.audiences) & set(audiences):
        raise AssertionAudienceMismatch(f"the assertion is for {list(user.audiences)}, not this archive")
    missing = [
        name
        for name, value in (
            (SUBJECT_ID, user.subject_id),
            (ORGANIZATION_ID, user.organization_id),
            (PURPOSE_OF_USE, user.purposes_of_use),
        )
        if not value
    ]
    if missing:
        raise AssertionIncomplete(f"attributes missing: {', '.join(missing)}")
    return user


def _verified(assertion: etree._Element, provider: IdentityProvider, *, allow_sha1: bool) -> etree._Element:
    methods = _STRONG if allow_sha1 else _STRONG - _SHA1_METHODS
    digests = (
        frozenset(DigestAlgorithm) if allow_sha1 else frozenset(DigestAlgorithm) - {DigestAlgorithm.SHA1}
    )
    config = SignatureConfiguration(
        require_x509=True,
        location="./",  # the Signature is a child of the assertion (enveloped)
        expect_references=1,
        signature_methods=methods,
        digest_algorithms=digests,
        ignore_ambiguous_key_info=True,  # the registered certificate decides, not the sender's KeyInfo
    )
    # A standalone copy keeps the namespace declarations in scope; signxml re-parses it.
    standalone = copy.deepcopy(assertion)
    last_error: Exception | None = None
    for certificate in provider.certificates:
        try:
            result = XMLVerifier().verify(
                standalone, x509_cert=certificate, id_attribute="ID", expect_config=config
            )
        except (InvalidSignature, InvalidDigest, InvalidInput, InvalidCertificate) as exc:
            last_error = exc
            continue
        verified = result[0] if isinstance(result, list) else result
        return verified.signed_xml  # type: ignore[no-any-return]
    raise AssertionSignatureInvalid(f"signature does not verify: {last_error}")
