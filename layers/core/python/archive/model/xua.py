"""Who is asking, as an identity provider vouches for it (IHE XUA, a SAML 2.0 assertion).

The attributes are those of the IHE XUA profile and the OASIS XSPA SAML profile: the person
(subject-id), their organisation (name and OID), their role and purpose of use (HL7 v3 coded
values), the patient the request is about (resource-id, a CX) and the home community.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from archive.model.xds import Code


@dataclass(frozen=True)
class IdentityProvider:
    """An identity provider whose signed assertions the archive accepts; ``issuer`` is the exact
    saml:Issuer value, ``certificates`` its signing certificates (PEM; several during a rollover)."""

    issuer: str
    certificates: tuple[str, ...]


@dataclass(frozen=True)
class UserAssertion:
    assertion_id: str
    issuer: str
    subject_name_id: str | None = None
    subject_id: str | None = None  # xspa subject-id: the person's name
    organization: str | None = None
    organization_id: str | None = None  # as sent, usually urn:oid:<OID>
    roles: tuple[Code, ...] = ()
    purposes_of_use: tuple[Code, ...] = ()
    resource_id: str | None = None  # the patient, a CX
    home_community_id: str | None = None
    not_before: datetime | None = None
    not_on_or_after: datetime | None = None
    audiences: tuple[str, ...] = ()

    @property
    def organization_oid(self) -> str | None:
        """organization-id without the ``urn:oid:`` prefix (organisations are known by OID)."""
        if self.organization_id is None:
            return None
        value = self.organization_id
        return value[len("urn:oid:") :] if value.lower().startswith("urn:oid:") else value
