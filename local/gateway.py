"""Plays API Gateway locally: HTTP requests become REST API proxy events for the deployed handler
modules (``functions/<name>/handler.py``), exactly the event shape Lambda receives.

Two servers in the local cloud's process, as on AWS:
- HTTPS with mutual TLS (the XDS API's custom domain with its truststore): the client certificate
  is verified against the CA bundle of the TLS secret and passed to the handler as
  ``requestContext.identity.clientCert``, as API Gateway does;
- plain HTTP on loopback for the admin API (on AWS: IAM-authorised; here the local operator).

And the XDS endpoints as their own process, ``python -m local.gateway`` (started by the local cloud
on XDS_PORT, 8080 for ``make run``): ``/xds/registry`` and ``/xds/repository`` become proxy events
(binary bodies base64-encoded, as API Gateway does with binary media types) for the very handler
modules deployed to Lambda; ``/xds/imaging`` goes to the RAD-69 streaming code in this process, as
the load balancer sends it to the Fargate service on AWS. Bodies over API Gateway's 10 MB are
refused as on AWS, with the SOAP Fault the gateway response is configured to give.
"""

from __future__ import annotations

import base64
import logging
import os
import ssl
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import ModuleType
from typing import Any, BinaryIO
from urllib.parse import parse_qs, urlsplit

from archive import topology as t
from archive.config import Settings
from archive.data.models import bind_models
from archive.data.registry import Registry
from archive.data.secrets import SecretTlsMaterial
from archive.services.audit import build_audit_trail
from archive.services.connection_security import PeerAuthenticator
from archive.services.directory import CachedRegistry
from archive.services.xds_app import XdsApplication
from archive.services.xds_exchange import HttpAnswer, Peer
from archive.tls.rotation import RotatingTls
from archive.topology import ADMIN_API, DISCLOSURE_NOTIFICATION
from cryptography import x509

from listeners.xds_imaging.server import Route as StreamRoute
from listeners.xds_imaging.server import make_server, serve_until_signalled

from .runner import LambdaContext, LocalFunction, load_handler, unqueued_function

LOG = logging.getLogger("archive.local.gateway")
MAX_BODY = 1024 * 1024


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # exact resource path, e.g. /disclosures/notifications
    function: LocalFunction
    mutual_tls: bool  # served on the mTLS (customer) endpoint, else on the admin endpoint


ROUTES = (
    Route(
        "POST",
        "/disclosures/notifications",
        unqueued_function(DISCLOSURE_NOTIFICATION),
        mutual_tls=True,
    ),
    Route("GET", "/admin/disclosures", unqueued_function(ADMIN_API), mutual_tls=False),
    Route("GET", "/admin/disclosures/verify", unqueued_function(ADMIN_API), mutual_tls=False),
)


def client_cert(der: bytes) -> dict[str, Any]:
    """``requestContext.identity.clientCert`` as API Gateway fills it for a mutual-TLS request."""
    certificate = x509.load_der_x509_certificate(der)
    pem = (
        "-----BEGIN CERTIFICATE-----\n"
        + "\n".join(
            base64.b64encode(der).decode("ascii")[i : i + 64]
            for i in range(0, len(base64.b64encode(der)), 64)
        )
        + "\n-----END CERTIFICATE-----\n"
    )
    return {
        "clientCertPem": pem,
        "subjectDN": certificate.subject.rfc4514_string(),
        "issuerDN": certificate.issuer.rfc4514_string(),
        "serialNumber": format(certificate.serial_number, "X"),
        "validity": {
            "notBefore": certificate.not_valid_before_utc.strftime("%b %d %H:%M:%S %Y GMT"),
            "notAfter": certificate.not_valid_after_utc.strftime("%b %d %H:%M:%S %Y GMT"),
        },
    }


def proxy_event(
    method: str,
    path: str,
    query: dict[str, list[str]],
    headers: dict[str, str],
    body: bytes,
    source_ip: str,
    certificate: dict[str, Any] | None,
) -> dict[str, Any]:
    """A REST API (v1) Lambda proxy integration event."""
    text = body.decode("utf-8") if body else None
    now = datetime.now(UTC)
    return {
        "resource": path,
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": {k: v[-1] for k, v in query.items()} or None,
        "multiValueQueryStringParameters": query or None,
        "pathParameters": None,
        "stageVariables": None,
        "body": text,
        "isBase64Encoded": False,
        "requestContext": {
            "resourcePath": path,
            "httpMethod": method,
            "path": f"/local{path}",
            "stage": "local",
            "requestId": str(uuid.uuid4()),
            "requestTime": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "requestTimeEpoch": int(now.timestamp() * 1000),
            "accountId": "000000000000",
            "apiId": "local",
            "identity": {
                "sourceIp": source_ip,
                "userAgent": headers.get("User-Agent"),
                "clientCert": certificate,
            },
        },
    }


class _Handler(BaseHTTPRequestHandler):
    server: _GatewayServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        LOG.info("%s %s", self.address_string(), format % args)

    def _dispatch(self) -> None:
        url = urlsplit(self.path)
        route = next(
            (r for r in ROUTES if r.path == url.path and r.mutual_tls == self.server.mutual_tls), None
        )
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._reply(413, {"Content-Type": "application/json"}, b'{"message":"request too large"}')
            return
        body = self.rfile.read(length) if length else b""
        if route is None:
            self._reply(
                404, {"Content-Type": "application/json"}, b'{"message":"Missing Authentication Token"}'
            )
            return
        if route.method != self.command:
            self._reply(405, {"Content-Type": "application/json"}, b'{"message":"method not allowed"}')
            return
        certificate = None
        if self.server.mutual_tls:
            der = self.connection.getpeercert(binary_form=True)  # type: ignore[attr-defined]
            certificate = client_cert(der) if der else None
        event = proxy_event(
            self.command,
            url.path,
            parse_qs(url.query),
            dict(self.headers.items()),
            body,
            self.client_address[0],
            certificate,
        )
        try:
            result = self.server.module(route).handler(event, LambdaContext(route.function.name))
        except Exception:
            LOG.exception("%s raised", route.function.name)
            self._reply(502, {"Content-Type": "application/json"}, b'{"message":"Internal server error"}')
            return
        payload = result.get("body") or ""
        data = base64.b64decode(payload) if result.get("isBase64Encoded") else payload.encode("utf-8")
        headers = {**(result.get("headers") or {})}
        # REST API proxy responses may give headers in either form; API Gateway merges them.
        headers.update({k: ", ".join(v) for k, v in (result.get("multiValueHeaders") or {}).items() if v})
        self._reply(int(result.get("statusCode", 200)), headers, data)

    def _reply(self, status: int, headers: dict[str, str], data: bytes) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = _dispatch
    do_POST = _dispatch
    do_PUT = _dispatch
    do_DELETE = _dispatch


class _GatewayServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], *, mutual_tls: bool, context: Callable[[], ssl.SSLContext] | None
    ):
        super().__init__(address, _Handler)
        self.mutual_tls = mutual_tls
        self._context = context
        self._modules: dict[str, ModuleType] = {}
        self._lock = threading.Lock()

    def module(self, route: Route) -> ModuleType:
        with self._lock:
            if route.function.handler_file not in self._modules:
                self._modules[route.function.handler_file] = load_handler(route.function)
            return self._modules[route.function.handler_file]

    def get_request(self) -> tuple[Any, Any]:
        sock, address = super().get_request()
        if self._context is not None:
            # The handshake runs in the request's thread (finish_request), not in the acceptor.
            sock = self._context().wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self._context is not None:
            try:
                request.settimeout(30)
                request.do_handshake()
            except (OSError, ssl.SSLError) as exc:
                LOG.info("TLS refused from %s: %s", client_address, exc)
                return
        super().finish_request(request, client_address)


class LocalGateway:
    """The admin endpoint (HTTP) and the customers' mutual-TLS endpoint (HTTPS), on loopback."""

    def __init__(
        self, *, http_port: int, https_port: int | None, tls_context: Callable[[], ssl.SSLContext] | None
    ):
        self.http = _GatewayServer(("127.0.0.1", http_port), mutual_tls=False, context=None)
        self.https = (
            _GatewayServer(("127.0.0.1", https_port), mutual_tls=True, context=tls_context)
            if https_port is not None and tls_context is not None
            else None
        )
        self._threads: list[threading.Thread] = []

    @property
    def http_port(self) -> int:
        return int(self.http.server_address[1])

    @property
    def https_port(self) -> int | None:
        return int(self.https.server_address[1]) if self.https else None

    def start(self) -> LocalGateway:
        for server in (self.http, self.https):
            if server is not None:
                thread = threading.Thread(target=server.serve_forever, name="local-gateway", daemon=True)
                thread.start()
                self._threads.append(thread)
        return self

    def stop(self) -> None:
        for server in (self.http, self.https):
            if server is not None:
                server.shutdown()
                server.server_close()


# --- the XDS endpoints (their own process) ------------------------------------------------------


def binary_proxy_event(path: str, body: bytes, content_type: str, peer: Peer = Peer()) -> dict[str, Any]:
    """The event API Gateway (REST, proxy integration, binary media types) gives a Lambda for a
    POST; over the mutual-TLS domain with the verified client certificate."""
    certificate = None
    if peer.certificate_pem:
        certificate = client_cert(ssl.PEM_cert_to_DER_cert(peer.certificate_pem))
    event = proxy_event(
        "POST", path, {}, {"Content-Type": content_type}, b"", peer.address or "127.0.0.1", certificate
    )
    event["body"] = base64.b64encode(body).decode("ascii")
    event["isBase64Encoded"] = True
    return event


def lambda_route(spec: t.FunctionSpec) -> StreamRoute:
    module = load_handler(unqueued_function(spec))

    def route(body: BinaryIO, content_type: str, peer: Peer) -> HttpAnswer:
        response = module.handler(
            binary_proxy_event(spec.path, body.read(), content_type, peer), LambdaContext(spec.function)
        )
        data = response.get("body") or ""
        payload = base64.b64decode(data) if response.get("isBase64Encoded") else data.encode("utf-8")
        headers = {k.lower(): v for k, v in (response.get("headers") or {}).items()}
        return HttpAnswer(int(response["statusCode"]), headers.get("content-type", "text/plain"), payload)

    return route


def main() -> None:
    """The XDS endpoints: plain HTTP on XDS_PORT and, with TLS material and XDS_TLS_PORT, the same
    routes over HTTPS with organisation client certificates (the mutual-TLS custom domain and the
    RAD-69 container's own TLS on AWS)."""
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
    routes: dict[str, StreamRoute] = {spec.path: lambda_route(spec) for spec in t.XDS_FUNCTIONS}
    routes[t.XDS_IMAGING_PATH] = XdsApplication(settings, audit_trail=trail).imaging
    host = os.environ.get(t.ENV_XDS_HOST, "127.0.0.1")
    servers = [make_server(host, int(os.environ[t.ENV_XDS_PORT]), routes)]
    tls_port = os.environ.get(t.ENV_XDS_TLS_PORT)
    if tls is not None and tls_port:
        authenticator = PeerAuthenticator(
            CachedRegistry(Registry()), trail, local_node=settings.audit_source_id
        )
        servers.append(
            make_server(host, int(tls_port), routes, tls=tls.server, on_refused=authenticator.tls_refused)
        )
    serve_until_signalled(servers, "XDS gateway")
    trail.close()


if __name__ == "__main__":
    main()
