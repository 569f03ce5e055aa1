"""``python -m listeners.xds_imaging``: the RAD-69 streaming service (Fargate behind its load balancer)."""

from __future__ import annotations

import logging
import os
import signal
import threading

from archive import topology as t
from archive.config import Settings
from archive.data.models import bind_models
from archive.services.xds_app import XdsApplication

from listeners.xds_imaging.server import make_server, serve_in_thread


def main() -> None:
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO"), format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("botocore").setLevel(logging.WARNING)
    settings = Settings.from_env()
    bind_models(settings)
    xds = XdsApplication(settings)
    server = make_server(
        os.environ.get(t.ENV_XDS_HOST, "0.0.0.0"),
        int(os.environ.get(t.ENV_XDS_PORT, "8080")),
        {t.XDS_IMAGING_PATH: xds.imaging},
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    serve_in_thread(server)
    print(f"RAD-69 service on {server.server_address}", flush=True)
    stop.wait()
    server.shutdown()


if __name__ == "__main__":
    main()
