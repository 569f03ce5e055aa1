"""The DICOM listener's TLS port (DICOM BCP 195 secure transport, PS3.15 B.9/B.10).

pynetdicom's own TLS server does the handshake in its accepting thread (one slow or hostile client
stalls every other connection) and swallows handshake failures. This server accepts plain TCP,
then does the handshake in the connection's own thread, with a timeout, using the context current
at that moment (certificates rotate without a restart), and reports each failure so it is audited
(110113). A connection that closes before sending a byte is a load balancer's health probe and
not a failure.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from collections.abc import Callable
from typing import Any, cast

from archive.tls.peer import tls_failure
from archive.tls.rotation import RotatingTls
from pynetdicom import AE
from pynetdicom.transport import ThreadedAssociationServer

LOG = logging.getLogger("archive.dicom.tls")
HANDSHAKE_TIMEOUT_SECONDS = 30.0

HandshakeFailure = Callable[[str | None, int, str], None]


class TlsAssociationServer(ThreadedAssociationServer):
    """An association server whose sockets are wrapped per connection, in that connection's thread."""

    tls: RotatingTls
    on_refused: HandshakeFailure | None = None

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        assert self.socket is not None
        client, address = self.socket.accept()
        return client, address

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        raw: socket.socket = request
        host = client_address[0] if isinstance(client_address, tuple) else None
        try:
            raw.settimeout(HANDSHAKE_TIMEOUT_SECONDS)
            if not raw.recv(1, socket.MSG_PEEK):
                raw.close()  # connected and closed without a byte: a health probe
                return
            wrapped = self.tls.server().wrap_socket(raw, server_side=True)
            wrapped.settimeout(self.ae.network_timeout)
        except (OSError, ssl.SSLError) as exc:
            reason = tls_failure(exc)
            if self.on_refused is not None:
                try:
                    self.on_refused(host, int(self.server_address[1]), f"TLS handshake failed: {reason}")
                except Exception:
                    LOG.exception("reporting a refused TLS connection failed")
            self.shutdown_request(raw)
            return
        super().process_request_thread(wrapped, client_address)


def start_tls_server(
    ae: AE,
    address: tuple[str, int],
    *,
    tls: RotatingTls,
    evt_handlers: list[Any],
    on_refused: HandshakeFailure | None,
) -> TlsAssociationServer:
    server = cast(
        TlsAssociationServer,
        ae.make_server(address, evt_handlers=evt_handlers, server_class=TlsAssociationServer),
    )
    server.tls = tls
    server.on_refused = on_refused
    ae._servers.append(server)  # as AE.start_server does; shutdown() removes it
    thread = threading.Thread(target=server.serve_forever, name="dicom-tls-acceptor", daemon=True)
    thread.start()
    return server
