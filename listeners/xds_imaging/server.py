"""HTTP/1.1 server for the XDS endpoints whose answers must stream (RAD-69).

Each route is a function of the request body stream, its Content-Type and the :class:`Peer`
(address, and over TLS the verified client certificate) returning an :class:`HttpAnswer`; a
streamed body goes out with chunked transfer encoding block by block, so the process never holds
an answer. A request body over ``max_body_bytes`` (API Gateway's 10 MB on the buffered routes) is
refused with a SOAP Fault before it is read, and the connection closed.

With ``tls`` the server terminates TLS itself, like the DICOM and HL7 listeners (the load balancer
passes TCP through): the context current at each connection (certificates rotate without a
restart) requires a client certificate from a trusted customer CA; the handshake runs in the
connection's own thread with a timeout, and a failure is reported (``on_refused``: 110113). A
connection closed before its first byte is a load balancer's health probe, not a failure. The
certificate's organisation is then bound to the XUA assertion's by the SOAP endpoint.
"""

from __future__ import annotations

import io
import logging
import signal
import socket
import ssl
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, BinaryIO

from archive.errors import XmlTooLarge
from archive.services.xds_exchange import HttpAnswer, Peer, fault_answer
from archive.tls.peer import tls_failure

LOG = logging.getLogger("archive.xds.http")
Route = Callable[[BinaryIO, str, Peer], HttpAnswer]
HandshakeFailure = Callable[[str | None, int, str], None]
MAX_BODY_BYTES = 10 * 1024 * 1024
HANDSHAKE_TIMEOUT_SECONDS = 30.0


class _Bounded(io.RawIOBase):
    """The request body: at most Content-Length bytes of the socket, never more."""

    def __init__(self, source: BinaryIO, length: int) -> None:
        self._source = source
        self._left = length

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        if self._left <= 0:
            return 0
        view = memoryview(buffer)[: min(len(buffer), self._left)]
        data = self._source.read(len(view))
        view[: len(data)] = data
        self._left -= len(data)
        return len(data)


class XdsHttpServer(ThreadingHTTPServer):
    """Plain HTTP, or (``tls``) HTTPS with a client certificate required, handshaking per thread."""

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        *,
        tls: Callable[[], ssl.SSLContext] | None = None,
        on_refused: HandshakeFailure | None = None,
    ) -> None:
        super().__init__(address, handler)
        self.tls = tls
        self.on_refused = on_refused

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.tls is not None:
            raw: socket.socket = request
            try:
                raw.settimeout(HANDSHAKE_TIMEOUT_SECONDS)
                if not raw.recv(1, socket.MSG_PEEK):
                    return  # connected and closed without a byte: a health probe
                request = self.tls().wrap_socket(raw, server_side=True)
                request.settimeout(None)
            except (OSError, ssl.SSLError) as exc:
                self._refused(client_address, f"TLS handshake failed: {tls_failure(exc)}")
                return
        super().finish_request(request, client_address)

    def _refused(self, client_address: Any, reason: str) -> None:
        host = client_address[0] if isinstance(client_address, tuple) else None
        LOG.info("TLS refused from %s: %s", host, reason)
        if self.on_refused is not None:
            try:
                self.on_refused(host, int(self.server_address[1]), reason)
            except Exception:
                LOG.exception("reporting a refused TLS connection failed")


def peer_of(connection: socket.socket, client_address: Any) -> Peer:
    """The caller's address and, over TLS, the certificate the handshake verified (PEM)."""
    address = client_address[0] if isinstance(client_address, tuple) else None
    if isinstance(connection, ssl.SSLSocket):
        der = connection.getpeercert(binary_form=True)
        return Peer(address, ssl.DER_cert_to_PEM_cert(der) if der else None)
    return Peer(address)


def make_server(
    host: str,
    port: int,
    routes: dict[str, Route],
    *,
    max_body_bytes: int = MAX_BODY_BYTES,
    tls: Callable[[], ssl.SSLContext] | None = None,
    on_refused: HandshakeFailure | None = None,
) -> XdsHttpServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            route = routes.get(self.path.split("?", 1)[0])
            if route is None:
                self._send(HttpAnswer(404, "text/plain", b"not found\n"))
                return
            length = int(self.headers.get("Content-Length") or 0)
            if length > max_body_bytes:
                self.close_connection = True
                self._send(
                    fault_answer(XmlTooLarge(f"request body of {length} bytes is over {max_body_bytes}"))
                )
                return
            body = io.BufferedReader(_Bounded(self.rfile, length), 64 * 1024)  # type: ignore[arg-type]
            answer = route(
                body, self.headers.get("Content-Type") or "", peer_of(self.connection, self.client_address)
            )
            body.read()  # whatever the parser did not need, so the connection can be reused
            self._send(answer)

        def _send(self, answer: HttpAnswer) -> None:
            self.send_response(answer.status)
            self.send_header("Content-Type", answer.content_type)
            if isinstance(answer.body, bytes):
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)
                return
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            try:
                for block in answer.body:
                    if block:
                        self.wfile.write(b"%x\r\n%b\r\n" % (len(block), block))
                self.wfile.write(b"0\r\n\r\n")
            except Exception:
                # The envelope is out already: cut the stream so the consumer sees it incomplete.
                LOG.exception("streamed answer broken off")
                self.close_connection = True
                self.connection.shutdown(2)

        def log_message(self, format: str, *args: object) -> None:
            LOG.info("%s %s", self.address_string(), format % args)

    return XdsHttpServer((host, port), Handler, tls=tls, on_refused=on_refused)


def serve_in_thread(server: ThreadingHTTPServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, name="xds-http", daemon=True)
    thread.start()
    return thread


def serve_until_signalled(servers: list[XdsHttpServer], name: str) -> None:
    """Serve each server in its own thread until SIGTERM or SIGINT, then shut them down."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    for server in servers:
        serve_in_thread(server)
        print(f"{name} on {server.server_address}{' (TLS)' if server.tls else ''}", flush=True)
    stop.wait()
    for server in servers:
        server.shutdown()
