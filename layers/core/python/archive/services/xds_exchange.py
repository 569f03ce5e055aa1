"""One SOAP exchange of the XDS interface, whatever the transaction: read the request (hardened,
MTOM or plain), check WS-Addressing, verify the XUA assertion against the registered identity
providers, run the transaction, and answer with its response or a SOAP Fault.

The edges (Lambda handlers, the streaming RAD-69 service) only turn their HTTP request into a
byte stream and a Content-Type and send the :class:`HttpAnswer` back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import BinaryIO

from lxml import etree

from archive.data.xds_access import XdsAccessConfig
from archive.errors import (
    ActionNotSupported,
    ArchiveError,
    CertificateNotOfAssertion,
    NotAuthenticated,
    SecurityTokenError,
    SoapFaultError,
)
from archive.model.xua import IdentityProvider, UserAssertion
from archive.xds import ns
from archive.xds.mtom import MtomMessage, read_message
from archive.xds.soap import (
    SoapRequest,
    envelope,
    fault_envelope,
    fault_for,
    request_from_envelope,
    serialize,
)
from archive.xds.xml import text_of
from archive.xds.xua import verify_assertion

LOG = logging.getLogger("archive.xds")
SOAP_XML = "application/soap+xml; charset=UTF-8"


@dataclass(frozen=True)
class HttpAnswer:
    """What goes back over HTTP: status, Content-Type and the body (bytes, or blocks to stream)."""

    status: int
    content_type: str
    body: bytes | Iterator[bytes]


@dataclass(frozen=True)
class Peer:
    """The other end of the HTTP connection: its address and, over mutual TLS, the client
    certificate (PEM) the handshake verified (API Gateway's clientCert, or the RAD-69 container's
    own TLS)."""

    address: str | None = None
    certificate_pem: str | None = None


@dataclass(frozen=True)
class Exchange:
    """A verified request: the SOAP message, its MTOM parts, who sent it and from where."""

    request: SoapRequest
    message: MtomMessage
    user: UserAssertion
    peer: Peer = Peer()


def soap_answer(body: etree._Element, *, action: str, relates_to: str) -> HttpAnswer:
    data = serialize(envelope(body, action=action, relates_to=relates_to))
    return HttpAnswer(200, f'application/soap+xml; charset=UTF-8; action="{action}"', data)


def fault_answer(error: SoapFaultError, relates_to: str | None = None) -> HttpAnswer:
    fault = fault_for(error)
    status = 500 if fault.code == "Receiver" else 400
    return HttpAnswer(status, SOAP_XML, fault_envelope(fault, relates_to=relates_to))


class IdentityProviders:
    """Looks up the identity provider an assertion names (one GetItem per request)."""

    def __init__(self, config: XdsAccessConfig) -> None:
        self._config = config

    def for_security(self, security: etree._Element | None) -> list[IdentityProvider]:
        if security is None:
            return []
        issuer = text_of(security.find(f"{ns.q(ns.SAML, 'Assertion')}/{ns.q(ns.SAML, 'Issuer')}"))
        provider = self._config.identity_provider(issuer) if issuer else None
        return [provider] if provider is not None else []


# Binds a mutual-TLS client certificate to the assertion's organisation; raises NotAuthenticated.
CertificateCheck = Callable[[str, UserAssertion, str | None], object]
# Told of an assertion refused before any transaction runs: (reason, caller's address).
AuthenticationFailure = Callable[[str, str | None], None]


class SoapEndpoint:
    """Reads, checks and verifies a request, then hands it to the transaction for its action.

    Over mutual TLS (the peer came with a verified client certificate) the certificate must also
    identify the organisation the assertion names (``certificate_check``); a mismatch is a
    wsse:FailedAuthentication Fault."""

    def __init__(
        self,
        providers: IdentityProviders,
        audiences: Callable[[], Collection[str]],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        certificate_check: CertificateCheck | None = None,
        authentication_failed: AuthenticationFailure | None = None,
    ) -> None:
        self._providers = providers
        self._audiences = audiences
        self._clock = clock
        self._certificate_check = certificate_check
        self._authentication_failed = authentication_failed

    def handle(
        self,
        body: BinaryIO,
        content_type: str,
        transactions: dict[str, Callable[[Exchange], HttpAnswer]],
        peer: Peer = Peer(),
    ) -> HttpAnswer:
        relates_to: str | None = None
        message: MtomMessage | None = None
        try:
            message = read_message(body, content_type or "application/soap+xml")
            request = request_from_envelope(message.root)
            relates_to = request.message_id
            transaction = transactions.get(request.action)
            if transaction is None:
                raise ActionNotSupported(f"action {request.action} is not served at this endpoint")
            try:
                user = verify_assertion(
                    request.security,
                    providers=self._providers.for_security(request.security),
                    audiences=self._audiences(),
                    now=self._clock(),
                )
            except SecurityTokenError as exc:
                # A refused assertion is an authentication failure (ATNA 110114), like a refused
                # certificate (whose check audits itself).
                if self._authentication_failed is not None:
                    self._authentication_failed(f"{type(exc).__name__}: {exc}", peer.address)
                raise
            if peer.certificate_pem is not None and self._certificate_check is not None:
                try:
                    self._certificate_check(peer.certificate_pem, user, peer.address)
                except NotAuthenticated as exc:
                    raise CertificateNotOfAssertion(str(exc)) from exc
            return transaction(Exchange(request, message, user, peer))
        except SoapFaultError as exc:
            LOG.info("SOAP fault: %s: %s", type(exc).__name__, exc)
            return fault_answer(exc, relates_to)
        except ArchiveError as exc:
            LOG.exception("XDS request failed")
            return fault_answer(SoapFaultError(f"{type(exc).__name__}: {exc}"), relates_to)
        finally:
            if message is not None:
                message.close()
