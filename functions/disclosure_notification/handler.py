"""Lambda: customers' disclosure notifications (POST /disclosures/notifications on the XDS API).

Behind API Gateway's custom domain with mutual TLS: the client certificate (verified against the
truststore of customer CAs) names the notifying organisation. Thin: parse, call
``DisclosureLog.notify``, map exception types to HTTP statuses (docs/disclosure-log.md).
"""

from __future__ import annotations

import json
from typing import Any

from archive.config import Settings
from archive.data.models import bind_models
from archive.data.registry import Registry
from archive.errors import (
    DisclosureRefused,
    InvalidNotification,
    NotAuthenticated,
    NotificationConflict,
    StudyNotControlled,
    UnknownOrganisation,
    UnknownPatient,
    UnknownStudy,
)
from archive.services.audit import build_audit_trail
from archive.services.connection_security import PeerAuthenticator
from archive.services.directory import CachedRegistry
from archive.services.disclosure import DisclosureNotification, build_disclosure_log
from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.utilities.typing import LambdaContext

logger = Logger(service="disclosure-notification")
settings = Settings.from_env()
bind_models(settings)
audit_trail = build_audit_trail(settings, background=False)
registry = CachedRegistry(Registry())
authenticator = PeerAuthenticator(registry, audit_trail, local_node=settings.audit_source_id)
disclosures = build_disclosure_log(settings, audit_trail)
app = APIGatewayRestResolver()
STATUS = {
    InvalidNotification: 400,
    NotAuthenticated: 403,
    UnknownOrganisation: 403,
    StudyNotControlled: 403,
    UnknownPatient: 404,
    UnknownStudy: 404,
    NotificationConflict: 409,
}


@app.post("/disclosures/notifications")
def notify() -> Response[Any]:
    identity = app.current_event.request_context.identity
    body = _json(app.current_event.body)
    certificate = identity.client_cert.client_cert_pem if identity.client_cert else None
    claimed = body.get("organisation_oid") if isinstance(body, dict) else None
    notifier = authenticator.organisation_of_certificate(certificate, claimed, address=identity.source_ip)
    recorded = disclosures.notify(
        DisclosureNotification.from_json(body, notifier_oid=notifier), address=identity.source_ip
    )
    entry = recorded.entry
    result = {
        "status": "recorded" if recorded.created else "recorded before",
        "patient": entry.patient_key,
        "seq": entry.seq,
        "entry_hash": entry.entry_hash,
        "recorded_at": entry.recorded_at,
    }
    return Response(201 if recorded.created else 200, content_types.APPLICATION_JSON, result)


def _json(text: str | None) -> Any:
    try:
        return json.loads(text or "")
    except ValueError:
        raise InvalidNotification("the body is not JSON") from None


@app.exception_handler([DisclosureRefused, NotAuthenticated, UnknownOrganisation])
def refused(exc: Exception) -> Response[Any]:
    status = next((code for kind, code in STATUS.items() if isinstance(exc, kind)), 400)
    body = {"error": type(exc).__name__, "message": str(exc), "field": getattr(exc, "field", None)}
    return Response(status, content_types.APPLICATION_JSON, body)


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    try:
        return app.resolve(event, context)
    finally:
        audit_trail.flush()
