"""Who may connect as whom: the peer's certificate against the organisation registered for the
calling AE, the HL7 sending facility, or the XUA assertion of an XDS request; every refusal is an
audit event (110114 User Authentication failure; 110113 Security Alert for TLS failures).

Listeners call ``check_ae`` at association acceptance and ``check_organisation`` once an HL7
message names its facility; the XDS endpoints call ``check_xua``. Chain and validity are checked by
TLS before any of this (``archive.tls.contexts``).
"""

from __future__ import annotations

import logging

from archive.audit import messages as audit
from archive.errors import NotAuthenticated, UnknownOrganisation
from archive.model.certificates import (
    Binding,
    CertificateIdentity,
    Verdict,
    identifies,
    identifies_xua_organisation,
)
from archive.model.organisations import AEInfo, OrganisationInfo
from archive.model.xua import UserAssertion
from archive.services.audit import AuditTrail
from archive.services.directory import CachedRegistry
from archive.tls.peer import identity_from_pem

LOG = logging.getLogger("archive.security")


def ae_binding(ae: AEInfo, org: OrganisationInfo) -> Binding:
    return Binding(org.oid, frozenset(org.certificate_names), ae.ae_title, frozenset(ae.certificate_names))


class PeerAuthenticator:
    def __init__(self, registry: CachedRegistry, audit_trail: AuditTrail | None, *, local_node: str) -> None:
        self._registry = registry
        self._audit = audit_trail
        self._local_node = local_node

    def check_ae(self, ae: AEInfo, identity: CertificateIdentity | None, *, address: str | None) -> Verdict:
        """May this connection act as ``ae``? Plain connections only for AEs not registered for TLS."""
        if identity is None:
            if ae.tls:
                verdict = Verdict(False, f"{ae.ae_title} is registered for TLS but connected without it")
            else:
                return Verdict(True, "plain connection, AE not registered for TLS")
        else:
            verdict = identifies(identity, ae_binding(ae, self._registry.organisation(ae.org_oid)))
        self.authentication(ae.ae_title, address, verdict)
        return verdict

    def check_organisation(
        self, org: OrganisationInfo, identity: CertificateIdentity | None, *, node: str, address: str | None
    ) -> None:
        """Raise NotAuthenticated unless the certificate identifies ``org`` (HL7: the facility's org)."""
        if identity is None:
            return  # a plain listener (local, dev): identified by registration and address only
        verdict = identifies(identity, Binding(org.oid, frozenset(org.certificate_names), node))
        self.authentication(node, address, verdict)
        if not verdict.accepted:
            raise NotAuthenticated(verdict.reason)

    def check_xua(self, certificate_pem: str | None, assertion: UserAssertion, *, address: str | None) -> str:
        """The organisation OID of an XDS request whose mutual-TLS client certificate (as API
        Gateway passes it) and XUA assertion (organization-id) name the same organisation;
        NotAuthenticated otherwise."""
        if not certificate_pem:
            raise NotAuthenticated("no client certificate: the XDS endpoint requires mutual TLS")
        if not assertion.organization_id:
            raise NotAuthenticated("the XUA assertion has no organization-id")
        identity = identity_from_pem(certificate_pem)
        oid = assertion.organization_oid or ""
        try:
            names = self._registry.organisation(oid).certificate_names
        except UnknownOrganisation:
            names = ()
        verdict = identifies_xua_organisation(identity, assertion.organization_id, names)
        self.authentication(assertion.subject_id or oid, address, verdict)
        if not verdict.accepted:
            raise NotAuthenticated(verdict.reason)
        return oid

    def organisation_of_certificate(
        self, certificate_pem: str | None, claimed_oid: str | None, *, address: str | None
    ) -> str:
        """The registered organisation a mutual-TLS HTTP request comes from (API Gateway passes the
        verified client certificate as PEM). The certificate's own ``urn:oid`` names it; a
        certificate without one must be registered by name and the request names the OID."""
        if not certificate_pem:
            raise NotAuthenticated("no client certificate: the endpoint requires mutual TLS")
        identity = identity_from_pem(certificate_pem)
        claims = identity.organisation_oids
        if claimed_oid:
            oid = claimed_oid.removeprefix("urn:oid:")
        elif len(claims) == 1:
            oid = next(iter(claims))
        else:
            raise NotAuthenticated(
                f"certificate {identity.display} does not name exactly one organisation; give organisation_oid"
            )
        org = self._registry.organisation(oid)
        verdict = identifies(identity, Binding(org.oid, frozenset(org.certificate_names)))
        self.authentication(oid, address, verdict)
        if not verdict.accepted:
            raise NotAuthenticated(verdict.reason)
        return oid

    # --- audit -----------------------------------------------------------------------------

    def authentication(self, user: str, address: str | None, verdict: Verdict) -> None:
        """110114 for a refusal (accepted connections are audited by what they then do)."""
        if verdict.accepted:
            return
        LOG.warning("refused %s from %s: %s", user, address, verdict.reason)
        if self._audit is None:
            return
        self._audit.record(
            audit.user_authentication(
                source=self._audit.source,
                outcome=audit.Outcome.MINOR_FAILURE,
                user=audit.ActiveParticipant(user, True, None, address),
                node_=audit.ActiveParticipant(self._local_node, False, audit.APPLICATION),
                description=verdict.reason,
            )
        )

    def tls_refused(self, address: str | None, port: int, reason: str) -> None:
        """110113 Security Alert: a TLS handshake failed (unknown CA, expired, no certificate, not TLS)."""
        LOG.warning("TLS refused from %s on port %d: %s", address, port, reason)
        if self._audit is None:
            return
        self._audit.record(
            audit.security_alert(
                source=self._audit.source,
                reporter=audit.ActiveParticipant(self._local_node, False, audit.APPLICATION),
                peer=audit.ActiveParticipant(address or "unknown", True, None, address),
                subject=f"tls://{address}:{port}" if address else f"tls://unknown:{port}",
                description=reason,
            )
        )
