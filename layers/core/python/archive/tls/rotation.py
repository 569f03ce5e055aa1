"""Certificates rotated without a redeploy: contexts rebuilt when the material's version changes.

Each connection asks for the current context; at most every ``check_seconds`` that asks the source
whether the material has a new version (for Secrets Manager a DescribeSecret, no secret read), and
only a new version is loaded and turned into new contexts. Connections already open keep theirs.
If the source cannot be reached, the last good contexts stay in use and the failure is logged.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable
from typing import Protocol

from archive.model.certificates import CertificateIdentity, Verdict
from archive.tls.contexts import TlsMaterial, client_context, server_context
from archive.tls.peer import identity_of_socket

LOG = logging.getLogger("archive.tls")


PeerCheck = Callable[[CertificateIdentity | None], Verdict]


def _checked_socket_class(check: PeerCheck) -> type[ssl.SSLSocket]:
    class CheckedSSLSocket(ssl.SSLSocket):
        def do_handshake(self, block: bool = False) -> None:
            super().do_handshake(block)
            verdict = check(identity_of_socket(self))
            if not verdict.accepted:
                raise ssl.SSLCertVerificationError(verdict.reason)

    return CheckedSSLSocket


class MaterialSource(Protocol):
    def current_version(self) -> str:
        """A cheap check: the version the next ``load`` would return."""

    def load(self) -> TlsMaterial:
        """The material itself (certificate chain, key, CA bundle) and its version."""


class StaticMaterial:
    """Material that never changes (tests, a certificate mounted as files)."""

    def __init__(self, material: TlsMaterial) -> None:
        self._material = material

    def current_version(self) -> str:
        return self._material.version

    def load(self) -> TlsMaterial:
        return self._material


class RotatingTls:
    def __init__(
        self,
        source: MaterialSource,
        *,
        check_seconds: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._source = source
        self._check_seconds = check_seconds
        self._clock = clock
        self._lock = threading.Lock()
        material = source.load()
        self._material = material
        self._version = material.version
        self._server = server_context(material)
        self._client = client_context(material)
        self._checked_at = clock()
        self.reloads = 0

    @property
    def version(self) -> str:
        return self._version

    def server(self) -> ssl.SSLContext:
        self._maybe_reload()
        return self._server

    def client(self) -> ssl.SSLContext:
        self._maybe_reload()
        return self._client

    def client_verifying(self, check: PeerCheck) -> ssl.SSLContext:
        """A new client context whose handshake also runs ``check`` on the server's certificate
        (its organisation): a refusal fails the connection like an untrusted chain would."""
        self._maybe_reload()
        context = client_context(self._material)
        context.sslsocket_class = _checked_socket_class(check)
        return context

    def _maybe_reload(self) -> None:
        now = self._clock()
        if now - self._checked_at < self._check_seconds:
            return
        with self._lock:
            if now - self._checked_at < self._check_seconds:
                return
            self._checked_at = now
            try:
                if self._source.current_version() == self._version:
                    return
                material = self._source.load()
                server, client = server_context(material), client_context(material)
            except Exception:
                LOG.exception("TLS material could not be reloaded; keeping version %s", self._version)
                return
            self._server, self._client, self._version = server, client, material.version
            self._material = material
            self.reloads += 1
            LOG.info("TLS material reloaded: version %s", material.version)
