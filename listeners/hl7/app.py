"""Composition root of the HL7 listener: builds it from the environment (what the task sets)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from archive.config import Settings
from archive.data.models import bind_models
from archive.data.patients import FacilityRepository, PatientRepository, PatientUpdateQueue
from archive.hl7.adt import AdtIntake, FacilityDirectory
from archive.patients import PatientService
from archive.registry import CachedRegistry, Registry

from .server import ListenerLimits, MllpListener


@dataclass(frozen=True)
class HL7ListenerSettings:
    """The listener's own settings, on top of the archive's ``Settings``."""

    host: str
    port: int
    queue_url: str
    limits: ListenerLimits

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> HL7ListenerSettings:
        env = os.environ if env is None else env
        queue_url = env.get("PATIENT_UPDATE_QUEUE_URL")
        if not queue_url:
            raise RuntimeError("missing configuration: PATIENT_UPDATE_QUEUE_URL")
        return cls(
            host=env.get("HL7_HOST", "0.0.0.0"),
            port=int(env.get("HL7_PORT", "2575")),
            queue_url=queue_url,
            limits=ListenerLimits(
                max_message_bytes=int(env.get("HL7_MAX_MESSAGE_BYTES", str(1024 * 1024))),
                idle_timeout_seconds=float(env.get("HL7_IDLE_TIMEOUT_SECONDS", "300")),
            ),
        )


def build(settings: Settings, hl7: HL7ListenerSettings) -> MllpListener:
    bind_models(settings)
    intake = AdtIntake(
        FacilityDirectory(CachedRegistry(Registry()), FacilityRepository()),
        PatientService(PatientRepository(settings)),
        PatientUpdateQueue(settings, hl7.queue_url),
    )
    return MllpListener(intake, host=hl7.host, port=hl7.port, limits=hl7.limits)
