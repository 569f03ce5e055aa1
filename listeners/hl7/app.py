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
from archive.data.secrets import SecretTlsMaterial
from archive.services.audit import AuditTrail, build_audit_trail
from archive.services.connection_security import PeerAuthenticator
from archive.services.directory import CachedRegistry
from archive.services.patient_intake import AdtIntake, FacilityDirectory
from archive.services.patients import PatientService
from archive.tls.rotation import RotatingTls

from .secure import MllpTls
from .server import ListenerLimits, MllpListener


@dataclass(frozen=True)
class HL7ListenerSettings:
    """The listener's own settings, on top of the archive's ``Settings``."""

    host: str
    port: int | None  # plain MLLP; None: off
    queue_url: str
    limits: ListenerLimits
    tls_port: int | None = None  # MLLP over TLS; needs TLS_SECRET_ID

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> HL7ListenerSettings:
        env = os.environ if env is None else env
        queue_url = env.get(t.ENV_PATIENT_UPDATE_QUEUE_URL)
        if not queue_url:
            raise RuntimeError(f"missing configuration: {t.ENV_PATIENT_UPDATE_QUEUE_URL}")
        return cls(
            host=env.get(t.ENV_HL7_HOST, "0.0.0.0"),
            port=_port(env.get(t.ENV_HL7_PORT, "2575")),
            tls_port=_port(env.get(t.ENV_HL7_TLS_PORT, "")),
            queue_url=queue_url,
            limits=ListenerLimits(
                max_message_bytes=int(env.get(t.ENV_HL7_MAX_MESSAGE_BYTES, str(1024 * 1024))),
                idle_timeout_seconds=float(env.get(t.ENV_HL7_IDLE_TIMEOUT, "300")),
            ),
        )


def _port(value: str) -> int | None:
    """A port number; empty (or "off") turns that listener off."""
    return None if value.strip().lower() in ("", "off") else int(value)


def build(settings: Settings, hl7: HL7ListenerSettings) -> tuple[MllpListener, AuditTrail]:
    bind_models(settings)
    registry = CachedRegistry(Registry(), FacilityRepository())
    intake = AdtIntake(
        FacilityDirectory(registry),
        PatientService(PatientRepository(settings)),
        PatientUpdateQueue(settings, hl7.queue_url),
    )
    tls = None
    if settings.tls_secret_id:
        tls = RotatingTls(
            SecretTlsMaterial(settings, settings.tls_secret_id), check_seconds=settings.tls_check_seconds
        )
    trail = build_audit_trail(settings, client_context=tls.client if tls else None)
    secure = None
    if hl7.tls_port is not None:
        if tls is None:
            raise RuntimeError("HL7_TLS_PORT needs TLS material (TLS_SECRET_ID)")
        authenticator = PeerAuthenticator(registry, trail, local_node=settings.archive_ae_title)
        secure = MllpTls(port=hl7.tls_port, tls=tls, authenticator=authenticator, registry=registry)
    listener = MllpListener(intake, host=hl7.host, port=hl7.port, limits=hl7.limits, tls=secure)
    return listener, trail
