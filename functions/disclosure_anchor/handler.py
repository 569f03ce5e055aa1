"""Lambda: anchor the disclosure log (EventBridge schedule, hourly on AWS).

Writes the head of every chain that grew in the look-back window to the Object-Locked audit
bucket (``DisclosureLog.anchor``); overlapping windows are harmless, a missed run is caught up by
the next as long as it falls within the window.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from archive.config import Settings
from archive.data.models import bind_models
from archive.services.disclosure import build_disclosure_log
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

logger = Logger(service="disclosure-anchor")
settings = Settings.from_env()
bind_models(settings)
disclosures = build_disclosure_log(settings)
LOOKBACK = timedelta(hours=settings.anchor_lookback_hours)


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, int]:
    written = disclosures.anchor(lookback=LOOKBACK)
    logger.info("disclosure log anchored", extra={"anchors_written": written})
    return {"anchors_written": written}
