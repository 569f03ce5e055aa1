"""``python -m listeners.xds_imaging``: the RAD-69 streaming service (Fargate behind its load balancer).

Plain HTTP on ``XDS_PORT`` (``off`` to switch it off) and HTTPS with organisation client
certificates on ``XDS_TLS_PORT`` (with ``TLS_SECRET_ID``: the same secret and rotation as the
DICOM and HL7 listeners). Audit messages go to the audit trail, flushed from a background thread.
"""

from __future__ import annotations

import logging
import os

from archive import topology as t
from archive.config import Settings
from archive.data.models import bind_models
from archive.data.registry import Registry
from archive.data.secrets import SecretTlsMaterial
from archive.services.audit import build_audit_trail
from archive.services.connection_security import PeerAuthenticator
from archive.services.directory import CachedRegistry
from archive.services.xds_app import XdsApplication
from archive.tls.rotation import RotatingTls

from listeners.xds_imaging.server import Route, XdsHttpServer, make_server, serve_until_signalled


def port(value: str | None) -> int | None:
    """A port number; empty or "off" switches that server off."""
    return None if (value or "").strip().lower() in ("", "off") else int(value or "")


def main() -> None:
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO"), format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("botocore").setLevel(logging.WARNING)
    settings = Settings.from_env()
    bind_models(settings)
    tls = (
        RotatingTls(
            SecretTlsMaterial(settings, settings.tls_secret_id), check_seconds=settings.tls_check_seconds
        )
        if settings.tls_secret_id
        else None
    )
    trail = build_audit_trail(settings, client_context=tls.client if tls else None)
    xds = XdsApplication(settings, audit_trail=trail)
    routes: dict[str, Route] = {t.XDS_IMAGING_PATH: xds.imaging}
    host = os.environ.get(t.ENV_XDS_HOST, "0.0.0.0")
    servers: list[XdsHttpServer] = []
    plain_port = port(os.environ.get(t.ENV_XDS_PORT, "8080"))
    if plain_port is not None:
        servers.append(make_server(host, plain_port, routes))
    tls_port = port(os.environ.get(t.ENV_XDS_TLS_PORT))
    if tls_port is not None:
        if tls is None:
            raise RuntimeError(f"{t.ENV_XDS_TLS_PORT} needs TLS material ({t.ENV_TLS_SECRET_ID})")
        authenticator = PeerAuthenticator(
            CachedRegistry(Registry()), trail, local_node=settings.audit_source_id
        )
        servers.append(
            make_server(host, tls_port, routes, tls=tls.server, on_refused=authenticator.tls_refused)
        )
    serve_until_signalled(servers, "RAD-69 service")
    trail.close()


if __name__ == "__main__":
    main()
