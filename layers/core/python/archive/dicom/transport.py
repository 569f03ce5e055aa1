"""Outgoing DICOM associations to registered AEs: over TLS when the AE is registered for it.

Used for storage commitment reports on a new association, C-MOVE sub-operations and IAN. With
``tls`` set on the AE the archive presents its certificate, verifies the peer's chain against the
configured CAs and then that the certificate identifies the AE's organisation (and the AE's own
registered names, if any): a customer's node is trusted as the AE it is registered as, exactly as
on incoming associations. The check runs inside the TLS handshake, so a wrong peer never sees an
A-ASSOCIATE-RQ.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Any, Protocol

from pynetdicom import AE
from pynetdicom.association import Association

from archive.errors import NotAuthenticated
from archive.model.certificates import Binding, CertificateIdentity, Verdict, identifies
from archive.model.organisations import AEInfo, OrganisationInfo


class ClientTls(Protocol):
    """The archive's TLS material as outgoing connections use it (``archive.tls.RotatingTls``)."""

    def client_verifying(self, check: Callable[[CertificateIdentity | None], Verdict]) -> ssl.SSLContext: ...


def peer_binding(peer: AEInfo, org: OrganisationInfo) -> Binding:
    return Binding(
        org.oid, frozenset(org.certificate_names), peer.ae_title, frozenset(peer.certificate_names)
    )


def tls_arguments(peer: AEInfo, org: OrganisationInfo, tls: ClientTls | None) -> dict[str, Any]:
    """``associate`` keyword arguments for ``peer``: ``tls_args`` when it is registered for TLS.

    Also what a C-MOVE handler yields for its destination (pynetdicom passes them on).
    """
    if not peer.tls:
        return {}
    if tls is None:
        raise NotAuthenticated(f"{peer.ae_title} is registered for TLS but the archive has no TLS material")
    binding = peer_binding(peer, org)

    def check(identity: CertificateIdentity | None) -> Verdict:
        if identity is None:
            return Verdict(False, f"{peer.ae_title} presented no certificate")
        return identifies(identity, binding)

    return {"tls_args": (tls.client_verifying(check), peer.host)}


def open_association(
    ae: AE,
    peer: AEInfo,
    org: OrganisationInfo,
    *,
    tls: ClientTls | None,
    **kwargs: Any,
) -> Association:
    """Request an association from ``ae`` to the registered ``peer`` (TLS if its flag is set).

    Returns the association whatever its state; check ``is_established``. A peer whose certificate
    does not identify its organisation fails like an unreachable one (not established).
    """
    return ae.associate(
        peer.host, peer.port, ae_title=peer.ae_title, **tls_arguments(peer, org, tls), **kwargs
    )
