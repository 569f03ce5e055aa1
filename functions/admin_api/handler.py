"""Lambda: the admin API's disclosure endpoints (IAM-authorised on AWS; see docs/security.md).

    GET /admin/disclosures?patient_id=ID&issuer=OID[&format=csv]   the patient's disclosure report
    GET /admin/disclosures/verify?patient_id=ID&issuer=OID         the chains' verdicts

Thin: parse the query, call ``DisclosureLog``, render JSON or CSV.
"""

from __future__ import annotations

import json
from typing import Any

from archive.config import Settings
from archive.data.models import bind_models
from archive.model.disclosure import report_csv
from archive.services.disclosure import build_disclosure_log
from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.utilities.typing import LambdaContext

logger = Logger(service="admin-api")
settings = Settings.from_env()
bind_models(settings)
disclosures = build_disclosure_log(settings)
app = APIGatewayRestResolver()


def _patient_key() -> str | None:
    patient_id = app.current_event.get_query_string_value("patient_id")
    issuer = app.current_event.get_query_string_value("issuer")
    return f"{patient_id}^^^{issuer}" if patient_id and issuer else None


def _missing() -> Response[Any]:
    return Response(400, content_types.APPLICATION_JSON, {"message": "patient_id and issuer are required"})


@app.get("/admin/disclosures")
def report() -> Response[Any]:
    key = _patient_key()
    if key is None:
        return _missing()
    rows = disclosures.report(key)
    if app.current_event.get_query_string_value("format", "json") == "csv":
        return Response(200, "text/csv; charset=utf-8", report_csv(rows))
    return Response(200, content_types.APPLICATION_JSON, json.dumps({"patient": key, "disclosures": rows}))


@app.get("/admin/disclosures/verify")
def verify() -> Response[Any]:
    key = _patient_key()
    if key is None:
        return _missing()
    verdicts = [v.as_json() for v in disclosures.verify(key)]
    intact = all(v["intact"] for v in verdicts)
    return Response(200 if intact else 409, content_types.APPLICATION_JSON, json.dumps({"chains": verdicts}))


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
