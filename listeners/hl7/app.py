"""Composition root of the HL7 listener: builds it from the environment (what the task sets)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from archive import topology as t
from archive.config import Settings
from archive.data.facilities import FacilityRepository
from archive.data.models import bind_models
from archive.data.patients import PatientRepository
from archive.data.queues import PatientUpdateQueue
from archive.data.registry import Registry
from archive.services.directory import CachedRegistry
from archive.services.patient_intake import AdtIntake, FacilityDirectory
from archive.services.patients import PatientService

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
        queue_url = env.get(t.ENV_PATIENT_UPDATE_QUEUE_URL)
        if not queue_url:
            raise RuntimeError(f"missing configuration: {t.ENV_PATIENT_UPDATE_QUEUE_URL}")
        return cls(
            host=env.get(t.ENV_HL7_HOST, "0.0.0.0"),
            port=int(env.get(t.ENV_HL7_PORT, "2575")),
            queue_url=queue_url,
            limits=ListenerLimits(
                max_message_bytes=int(env.get(t.ENV_HL7_MAX_MESSAGE_BYTES, str(1024 * 1024))),
                idle_timeout_seconds=float(env.get(t.ENV_HL7_IDLE_TIMEOUT, "300")),
            ),
        )


def build(settings: Settings, hl7: HL7ListenerSettings) -> MllpListener:
    bind_models(settings)
    intake = AdtIntake(
        FacilityDirectory(CachedRegistry(Registry(), FacilityRepository())),
        PatientService(PatientRepository(settings)),
        PatientUpdateQueue(settings, hl7.queue_url),
    )
    return MllpListener(intake, host=hl7.host, port=hl7.port, limits=hl7.limits)
