"""Lambda behind API Gateway (REST, proxy integration): ``POST /xds/registry``, ITI-18 Registry
Stored Query and ITI-42 Register Document Set-b (told apart by wsa:Action).

Thin: the proxy event's body (base64 when API Gateway treats it as binary) becomes a stream, the
service answers with SOAP (a Fault for every refusal), the answer goes back as a proxy response.
"""

from __future__ import annotations

from typing import Any

from archive.config import Settings
from archive.data.models import bind_models
from archive.services.audit import build_audit_trail
from archive.services.xds_app import XdsApplication, answer_proxy_event
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent, event_source
from aws_lambda_powertools.utilities.typing import LambdaContext

logger = Logger(service="xds-registry")
settings = Settings.from_env()
bind_models(settings)
audit_trail = build_audit_trail(settings, background=False)
xds = XdsApplication(settings, audit_trail=audit_trail)


@logger.inject_lambda_context
@event_source(data_class=APIGatewayProxyEvent)
def handler(event: APIGatewayProxyEvent, context: LambdaContext) -> dict[str, Any]:
    return answer_proxy_event(xds.registry, event.raw_event, audit_trail)
