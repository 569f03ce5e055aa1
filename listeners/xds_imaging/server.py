"""HTTP/1.1 server for the XDS endpoints whose answers must stream (RAD-69).

Each route is a function of the request body stream and its Content-Type returning an
:class:`HttpAnswer`; a streamed body goes out with chunked transfer encoding block by block, so
the process never holds an answer. A request body over ``max_body_bytes`` (API Gateway's 10 MB on
the buffered routes) is refused with a SOAP Fault before it is read, and the connection closed.
"""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import BinaryIO

from archive.errors import XmlTooLarge
from archive.services.xds_exchange import HttpAnswer, fault_answer

LOG = logging.getLogger("archive.xds.http")
Route = Callable[[BinaryIO, str], HttpAnswer]
MAX_BODY_BYTES = 10 * 1024 * 1024


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


def make_server(
    host: str, port: int, routes: dict[str, Route], *, max_body_bytes: int = MAX_BODY_BYTES
) -> ThreadingHTTPServer:
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
            answer = route(body, self.headers.get("Content-Type") or "")
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

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def serve_in_thread(server: ThreadingHTTPServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, name="xds-http", daemon=True)
    thread.start()
    return thread
