"""MLLP over TLS (the HL7 listener's TLS port): mutual TLS per BCP 195, then every message's
sending facility must belong to the organisation the client certificate identifies.

The TLS handshake runs per connection with the context current at that moment (certificates
rotate without a restart). Reading is paused from the first moment of the connection until the
handshake, so no byte of the ClientHello can be lost to a plain stream reader. A failed handshake
is audited (110113); a connection closed before the handshake is a health probe and is not.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from archive.services.connection_security import PeerAuthenticator
from archive.services.directory import CachedRegistry
from archive.tls.peer import identity_from_peercert, tls_failure
from archive.tls.rotation import RotatingTls

LOG = logging.getLogger("archive.hl7.tls")
Authorise = Callable[[str, str], None]  # (organisation OID, sender MSH-3|MSH-4); raises to refuse
Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter, Authorise], Awaitable[None]]
PROBE_ERRORS = (ConnectionResetError, ConnectionAbortedError, BrokenPipeError, EOFError)


class _PausedUntilTls(asyncio.Protocol):
    def __init__(self, on_connection: Callable[[asyncio.Transport], None]) -> None:
        self._on_connection = on_connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.pause_reading()
        self._on_connection(transport)


class MllpTls:
    def __init__(
        self,
        *,
        port: int,
        tls: RotatingTls,
        authenticator: PeerAuthenticator,
        registry: CachedRegistry,
        handshake_timeout: float = 30.0,
        read_limit: int = 2**16,
    ) -> None:
        self.port = port
        self._tls = tls
        self._authenticator = authenticator
        self._registry = registry
        self._handshake_timeout = handshake_timeout
        self._read_limit = read_limit
        self._tasks: set[asyncio.Task[None]] = set()

    async def start_server(self, host: str, serve: Serve) -> asyncio.Server:
        loop = asyncio.get_running_loop()

        def connected(transport: asyncio.Transport) -> None:
            task = loop.create_task(self._secure(transport, serve))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        return await loop.create_server(
            lambda: _PausedUntilTls(connected), host, self.port, reuse_address=True
        )

    async def _secure(self, transport: asyncio.Transport, serve: Serve) -> None:
        loop = asyncio.get_running_loop()
        peer = transport.get_extra_info("peername")
        host = str(peer[0]) if isinstance(peer, tuple) else None
        reader = asyncio.StreamReader(limit=self._read_limit)
        protocol = asyncio.StreamReaderProtocol(reader)
        try:
            secured = await loop.start_tls(
                transport,
                protocol,
                self._tls.server(),
                server_side=True,
                ssl_handshake_timeout=self._handshake_timeout,
            )
        except PROBE_ERRORS:
            transport.close()
            return
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            transport.close()
            reason = tls_failure(exc)
            self._authenticator.tls_refused(host, self.port, f"TLS handshake failed: {reason}")
            return
        if secured is None:
            transport.close()
            return
        protocol.connection_made(secured)
        writer = asyncio.StreamWriter(secured, protocol, reader, loop)
        ssl_object: Any = secured.get_extra_info("ssl_object")
        identity = identity_from_peercert(ssl_object.getpeercert(), ssl_object.getpeercert(binary_form=True))

        def authorise(org_oid: str, sender: str) -> None:
            self._authenticator.check_organisation(
                self._registry.organisation(org_oid), identity, node=sender, address=host
            )

        await serve(reader, writer, authorise)
