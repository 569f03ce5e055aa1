"""Who is on the other end of a TLS connection: the names in a certificate and the rule that binds
them to a registered organisation (and, optionally, to one of its AEs or HL7 facilities).

A certificate is reduced to a set of names, written the way an operator registers them:
``CN=pacs.example.fi``, ``O=Example Hospital``, ``organizationIdentifier=1.2.246.10.1``,
``serialNumber=...``, ``DNS:pacs.example.fi``, ``URI:urn:oid:1.2.246.10.1``, ``IP:10.0.0.5``,
``email:...``. The organisation OIDs a certificate *claims* are its ``URI:urn:oid:<oid>`` subject
alternative names and its subject ``organizationIdentifier`` when that is an OID.

The rule (``identifies``):
1. the certificate must identify the organisation: if it claims organisation OIDs, the
   organisation's OID is one of them; otherwise one of its names is registered for the
   organisation (``certificate_names``);
2. if the AE (or facility) has names of its own registered, the certificate carries one of them.

Chain and validity (trusted CA, not expired) are TLS's business and checked before this.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

OID_PATTERN = re.compile(r"^[0-2](\.(0|[1-9][0-9]*))+$")
URN_OID = "urn:oid:"


@dataclass(frozen=True)
class CertificateIdentity:
    """The names of one certificate (subject attributes and subject alternative names)."""

    names: frozenset[str]
    subject: str = ""
    issuer: str = ""
    serial_number: str = ""
    fingerprint_sha256: str = ""

    @classmethod
    def of(cls, names: Iterable[str], **kwargs: str) -> CertificateIdentity:
        return cls(frozenset(names), **kwargs)

    @property
    def organisation_oids(self) -> frozenset[str]:
        """The organisation OIDs the certificate claims."""
        oids = set()
        for name in self.names:
            if name.startswith("URI:") and name[4:].lower().startswith(URN_OID):
                candidate = name[4 + len(URN_OID) :]
            elif name.startswith("organizationIdentifier="):
                candidate = name.partition("=")[2]
            else:
                continue
            if OID_PATTERN.match(candidate):
                oids.add(candidate)
        return frozenset(oids)

    @property
    def display(self) -> str:
        """A short description for logs and audit messages."""
        return self.subject or ", ".join(sorted(self.names)) or "(no names)"


@dataclass(frozen=True)
class Binding:
    """What a peer claims to be: an organisation and, optionally, one of its nodes with its own
    registered certificate names (an AE title, an HL7 facility)."""

    org_oid: str
    org_certificate_names: frozenset[str] = field(default_factory=frozenset)
    node: str | None = None
    node_certificate_names: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class Verdict:
    accepted: bool
    reason: str


def identifies(identity: CertificateIdentity, binding: Binding) -> Verdict:
    """Whether the certificate identifies the organisation (and node) of ``binding``."""
    claimed = identity.organisation_oids
    if claimed:
        if binding.org_oid not in claimed:
            return Verdict(
                False,
                f"certificate is for organisation {', '.join(sorted(claimed))}, not {binding.org_oid}",
            )
    elif not identity.names & binding.org_certificate_names:
        return Verdict(
            False,
            f"certificate {identity.display} names no organisation and none registered for {binding.org_oid}",
        )
    if binding.node_certificate_names and not identity.names & binding.node_certificate_names:
        return Verdict(False, f"certificate {identity.display} is not registered for {binding.node}")
    return Verdict(True, f"certificate {identity.display} identifies {binding.org_oid}")


def xua_organisation_oid(organisation_id: str) -> str:
    """The OID of a XUA ``organization-id`` attribute value (``urn:oid:<oid>`` or the bare OID)."""
    value = organisation_id.strip()
    if value.lower().startswith(URN_OID):
        value = value[len(URN_OID) :]
    return value


def identifies_xua_organisation(
    identity: CertificateIdentity, organisation_id: str, org_certificate_names: Iterable[str] = ()
) -> Verdict:
    """Whether the client certificate of a mutual-TLS XDS request belongs to the organisation the
    request's XUA assertion names (``urn:oasis:names:tc:xspa:1.0:subject:organization-id``)."""
    oid = xua_organisation_oid(organisation_id)
    if not OID_PATTERN.match(oid):
        return Verdict(False, f"XUA organization-id {organisation_id!r} is not an OID")
    return identifies(identity, Binding(oid, frozenset(org_certificate_names)))
