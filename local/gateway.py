"""The local stand-in for API Gateway and the RAD-69 load balancer route:
``python -m local.gateway`` (started by the local cloud on XDS_PORT, 8080 for ``make run``).

``/xds/registry`` and ``/xds/repository`` become API Gateway proxy events (REST API, binary
bodies base64-encoded as API Gateway does with binary media types) for the very handler modules
deployed to Lambda; ``/xds/imaging`` goes to the RAD-69 streaming code in this process, as the load balancer
sends it to the Fargate service on AWS. Bodies over API Gateway's 10 MB are refused as on AWS
(with the SOAP Fault the gateway response is configured to give).
"""

from __future__ import annotations

import base64
import logging
import os
import signal
import threading
import uuid
from typing import Any, BinaryIO

from archive import topology as t
from archive.config import Settings
from archive.data.models import bind_models
from archive.services.xds_app import XdsApplication
from archive.services.xds_exchange import HttpAnswer

from listeners.xds_imaging.server import Route, make_server, serve_in_thread

from .runner import LambdaContext, LocalFunction, load_handler


def proxy_event(path: str, body: bytes, content_type: str) -> dict[str, Any]:
    """The event API Gateway (REST, proxy integration) gives a Lambda for a POST."""
    return {
        "resource": path,
        "path": path,
        "httpMethod": "POST",
        "headers": {"Content-Type": content_type},
        "multiValueHeaders": {"Content-Type": [content_type]},
        "queryStringParameters": None,
        "pathParameters": None,
        "requestContext": {
            "resourcePath": path,
            "httpMethod": "POST",
            "path": f"/local{path}",
            "stage": "local",
            "requestId": str(uuid.uuid4()),
            "identity": {"sourceIp": "127.0.0.1"},
        },
        "body": base64.b64encode(body).decode("ascii"),
        "isBase64Encoded": True,
    }


def lambda_route(spec: t.HttpFunctionSpec) -> Route:
    module = load_handler(LocalFunction(spec.function, spec.handler_file, queue=""))

    def route(body: BinaryIO, content_type: str) -> HttpAnswer:
        response = module.handler(
            proxy_event(spec.path, body.read(), content_type), LambdaContext(spec.function)
        )
        data = response.get("body") or ""
        payload = base64.b64decode(data) if response.get("isBase64Encoded") else data.encode("utf-8")
        headers = {k.lower(): v for k, v in (response.get("headers") or {}).items()}
        return HttpAnswer(int(response["statusCode"]), headers.get("content-type", "text/plain"), payload)

    return route


def main() -> None:
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO"), format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("botocore").setLevel(logging.WARNING)
    settings = Settings.from_env()
    bind_models(settings)
    routes: dict[str, Route] = {spec.path: lambda_route(spec) for spec in t.HTTP_FUNCTIONS}
    routes[t.XDS_IMAGING_PATH] = XdsApplication(settings).imaging
    server = make_server(os.environ.get(t.ENV_XDS_HOST, "127.0.0.1"), int(os.environ[t.ENV_XDS_PORT]), routes)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    serve_in_thread(server)
    print(f"XDS gateway on {server.server_address}", flush=True)
    stop.wait()
    server.shutdown()


if __name__ == "__main__":
    main()
