"""The XDS interface assembled from configuration: one object per process with the three
endpoints (``POST /xds/registry``, ``/xds/repository``, ``/xds/imaging``) as functions of an HTTP
body stream and its Content-Type. Lambda handlers and the streaming RAD-69 service call these."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Mapping
from functools import cache
from typing import Any, BinaryIO

from archive.config import Settings
from archive.data.access_log import AccessLog
from archive.data.index import IndexRepository
from archive.data.objects import ObjectStore
from archive.data.query_index import QueryIndex
from archive.data.registration import RegistrationConfigRepository, RegistrationRepository
from archive.data.registry import Registry
from archive.data.xds_access import DisclosureDenials, XdsAccessConfig
from archive.data.xds_registry import XdsRegistry
from archive.model.certificates import Verdict
from archive.services.audit import AuditTrail
from archive.services.connection_security import PeerAuthenticator
from archive.services.directory import CachedRegistry
from archive.services.disclosure import build_disclosure_log
from archive.services.imaging_retrieve import ImagingDocumentSource
from archive.services.query.find import QueryService
from archive.services.query.retrieve import RetrieveService
from archive.services.storage_tiers import StorageTiers
from archive.services.xds_audit import XdsAudit
from archive.services.xds_documents import DocumentRegistryService
from archive.services.xds_exchange import HttpAnswer, IdentityProviders, Peer, SoapEndpoint
from archive.services.xds_query import QueryPolicy
from archive.xds import ns


class XdsApplication:
    """``audit_trail``: where the transactions' ATNA messages go (the caller flushes it: a Lambda
    at the end of each invocation, the RAD-69 service from its background thread)."""

    def __init__(
        self, settings: Settings, *, prefetch: int = 2, audit_trail: AuditTrail | None = None
    ) -> None:
        config = RegistrationConfigRepository()
        access = XdsAccessConfig()
        objects = ObjectStore(settings)
        index = QueryIndex(IndexRepository(settings))
        denials = DisclosureDenials()
        log = AccessLog()
        # Reads of another organisation's data also go to the patient's hash-chained disclosure log.
        chain = build_disclosure_log(settings)

        @cache
        def archive_identity() -> tuple[str, tuple[str, ...]]:
            identity = config.archive()
            audiences = (f"urn:oid:{identity.oid}", identity.home_community_id or f"urn:oid:{identity.oid}")
            return identity.repository_unique_id, audiences

        self.repository_unique_id = lambda: archive_identity()[0]
        authenticator = PeerAuthenticator(
            CachedRegistry(Registry()), audit_trail, local_node=settings.audit_source_id
        )
        self._endpoint = SoapEndpoint(
            IdentityProviders(access),
            lambda: archive_identity()[1],
            certificate_check=lambda pem, user, address: authenticator.check_xua(pem, user, address=address),
            authentication_failed=lambda reason, address: authenticator.authentication(
                "XUA assertion", address, Verdict(False, reason)
            ),
        )
        audit = XdsAudit(audit_trail, archive_node=settings.audit_source_id)
        self._documents = DocumentRegistryService(
            registry=XdsRegistry(settings),
            index=index,
            objects=objects,
            access=access,
            denials=denials,
            log=log,
            chain=chain,
            repository_unique_id=self.repository_unique_id,
            policy=QueryPolicy(max_leaf_class=settings.xds_max_leaf_class),
            audit=audit,
        )
        self._imaging = ImagingDocumentSource(
            retrieve=RetrieveService(
                index, QueryService(index, settings.archive_ae_title), objects, prefetch=prefetch
            ),
            registrations=RegistrationRepository(),
            denials=denials,
            log=log,
            chain=chain,
            repository_unique_id=self.repository_unique_id,
            audit=audit,
            # A RAD-69 of NEARLINE instances starts their study's restore, as a C-MOVE does.
            restores=StorageTiers.from_settings(settings, objects) if settings.restore_queue_url else None,
        )

    def registry(self, body: BinaryIO, content_type: str, peer: Peer = Peer()) -> HttpAnswer:
        """ITI-18 and ITI-42, told apart by wsa:Action."""
        return self._endpoint.handle(
            body,
            content_type,
            {ns.ACTION_ITI18: self._documents.stored_query, ns.ACTION_ITI42: self._documents.register},
            peer,
        )

    def repository(self, body: BinaryIO, content_type: str, peer: Peer = Peer()) -> HttpAnswer:
        """ITI-43 for the manifests this archive stores."""
        return self._endpoint.handle(body, content_type, {ns.ACTION_ITI43: self._documents.retrieve}, peer)

    def imaging(self, body: BinaryIO, content_type: str, peer: Peer = Peer()) -> HttpAnswer:
        """RAD-69; the answer's body is a stream of blocks."""
        return self._endpoint.handle(
            body, content_type, {ns.ACTION_RAD69: self._imaging.retrieve_imaging}, peer
        )


# --- API Gateway proxy events (REST API, Lambda proxy integration) ------------------------------

Endpoint = Callable[[BinaryIO, str, Peer], HttpAnswer]


def answer_proxy_event(
    endpoint: Endpoint, event: Mapping[str, Any], audit_trail: AuditTrail
) -> dict[str, Any]:
    """One proxy event through one endpoint (``XdsApplication.registry`` or ``.repository``): its
    body and caller in, a buffered proxy response out; the transaction's audit messages are flushed
    before the Lambda returns, whatever the answer."""
    body, content_type = request_body(event)
    try:
        return proxy_response(endpoint(body, content_type, request_peer(event)))
    finally:
        audit_trail.flush()


def request_body(event: Mapping[str, Any]) -> tuple[BinaryIO, str]:
    """The body of a proxy event as a stream (base64-decoded when API Gateway marked it binary) and
    its Content-Type."""
    raw = event.get("body") or ""
    data = base64.b64decode(raw) if event.get("isBase64Encoded") else raw.encode("utf-8")
    headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
    return io.BytesIO(data), headers.get("content-type", "application/soap+xml")


def request_peer(event: Mapping[str, Any]) -> Peer:
    """Who called, as API Gateway tells it: the source address and, on the mutual-TLS custom
    domain, the verified client certificate."""
    identity = (event.get("requestContext") or {}).get("identity") or {}
    certificate = identity.get("clientCert") or {}
    return Peer(identity.get("sourceIp"), certificate.get("clientCertPem"))


def proxy_response(answer: HttpAnswer) -> dict[str, Any]:
    """A buffered proxy response; the body is base64 (MTOM answers are binary)."""
    body = answer.body if isinstance(answer.body, bytes) else b"".join(answer.body)
    return {
        "statusCode": answer.status,
        "headers": {"Content-Type": answer.content_type},
        "body": base64.b64encode(body).decode("ascii"),
        "isBase64Encoded": True,
    }
