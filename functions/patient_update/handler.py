"""Lambda: apply queued HL7 patient changes (SQS FIFO, one message group per patient -> here).

Thin by design: parse each record, call ``PatientService.apply``, report partial failures. The FIFO
processor stops at the first failure so later messages of the batch are retried after it, in order.
A refusal (the change would corrupt the index) is a result, recorded in the patient's history, not
a failure to retry; so are the records of messages the listener refused (``kind`` = refusal).
"""

from __future__ import annotations

import json
from typing import Any

from archive.config import Settings
from archive.data.models import bind_models
from archive.data.objects import ObjectStore
from archive.data.patients import PatientRepository
from archive.data.retention import RetentionJobQueue
from archive.model.patients import ListenerRefusal, Outcome, PatientChangeRequest
from archive.model.retention import JOB_PATIENT
from archive.services.audit import build_audit_trail
from archive.services.patient_audit import audit_patient_change
from archive.services.patients import PatientService
from archive.services.registration import RegistrationRequests
from archive.services.retention import RetentionService
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import SqsFifoPartialProcessor, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

logger = Logger(service="patient-update")
settings = Settings.from_env()
bind_models(settings)
service = PatientService(PatientRepository(settings))
audit_trail = build_audit_trail(settings, background=False)
processor = SqsFifoPartialProcessor(skip_group_on_error=True)
registration = RegistrationRequests.from_settings(settings) if settings.registration_queue_url else None
# A death recorded or retracted (PID-29/30) recomputes the patient's studies' retention (a job).
retention = (
    RetentionService.configured(settings, ObjectStore(settings), jobs=RetentionJobQueue(settings))
    if settings.retention_queue_url
    else None
)


def record_handler(record: SQSRecord) -> None:
    body = json.loads(record.body)
    if body.get("kind") == ListenerRefusal.KIND:
        refused = service.record_refusal(ListenerRefusal.from_json(body))
        logger.info("refusal recorded", extra={"reason": refused.reason, "sender": body.get("sender")})
        return
    request = PatientChangeRequest.from_json(body)
    result = service.apply(request)
    audit_patient_change(audit_trail, request, result)
    logger.info(
        "patient change",
        extra={
            "event": request.event.value,
            "message_control_id": request.message_control_id,
            "patient": request.patient.key,
            "prior": request.prior.key if request.prior else None,
            "outcome": result.outcome.value,
            "reason": result.reason,
            "studies_updated": result.studies_updated,
        },
    )
    # Also on a redelivery (DUPLICATE): the job may not have been queued before; a job is idempotent.
    if (
        retention is not None
        and request.demographics.death_date is not None
        and result.outcome in (Outcome.APPLIED, Outcome.DUPLICATE)
    ):
        job = retention.start_job(
            JOB_PATIENT,
            request.patient.key,
            by=request.sender,
            reason=f"HL7 {request.event.value} {request.message_control_id}",
        )
        logger.info("retention job", extra={"job_id": job.job_id, "patient": request.patient.key})
    if registration is not None and result.outcome is Outcome.APPLIED:
        registration.patient_changed([request.patient.key, *([request.prior.key] if request.prior else [])])


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> Any:
    try:
        return process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )
    finally:
        audit_trail.flush()
