"""ITI-20 forwarding: audit messages reach an audit repository over mutually authenticated TLS as
RFC 5424 messages in RFC 5425 frames. The repository is a TLS syslog receiver started here."""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path

from archive.audit import messages as audit
from archive.audit.syslog import FrameReader
from archive.config import Settings
from archive.services.audit import AuditTrail, SyslogForwarder, build_audit_trail
from archive.tls.contexts import TlsMaterial
from archive.tls.rotation import RotatingTls, StaticMaterial

from local.pki import CertificateAuthority
from tests.support.audit import assert_valid
from tests.support.cloud import wait_until


class SyslogReceiver:
    """A TLS syslog receiver (RFC 5425) that requires a client certificate from ``ca``."""

    def __init__(self, ca: CertificateAuthority, directory: Path, port: int = 0) -> None:
        issued = ca.issue(
            "repository", common_name="audit-repository", ips=("127.0.0.1",), directory=directory
        )
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(ca.cert_path))
        self.context.verify_mode = ssl.CERT_REQUIRED
        self.context.load_cert_chain(str(issued.cert_path), str(issued.key_path))
        self.sock = socket.create_server(("127.0.0.1", port))
        self.port = self.sock.getsockname()[1]
        self.messages: list[bytes] = []
        self.peers: list[dict[str, object]] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                raw, _ = self.sock.accept()
            except OSError:
                return
            with self.context.wrap_socket(raw, server_side=True) as conn:
                self.peers.append(conn.getpeercert() or {})
                reader = FrameReader()
                while data := conn.recv(65536):
                    self.messages.extend(reader.feed(data))

    def close(self) -> None:
        self.sock.close()


def message(user: str) -> audit.AuditMessage:
    return audit.user_authentication(
        source=audit.AuditSource("ARCHIVE"),
        outcome=audit.Outcome.MINOR_FAILURE,
        user=audit.ActiveParticipant(user, True, None, "10.0.0.9"),
        node_=audit.ActiveParticipant("ARCHIVE", False, audit.APPLICATION),
        description="certificate of another organisation",
    )


def test_audit_messages_are_forwarded_over_mutual_tls_as_rfc5424(tmp_path: Path) -> None:
    # Given an audit repository listening with TLS and the archive's TLS material from the same CA
    ca = CertificateAuthority(tmp_path / "ca")
    archive = ca.archive_server()
    receiver = SyslogReceiver(ca, tmp_path)
    tls = RotatingTls(
        StaticMaterial(TlsMaterial(archive.certificate_pem, archive.key_pem, ca.certificate_pem, "1"))
    )
    settings = Settings(
        region="eu-north-1", bucket="unused", tables={}, audit_syslog_host="127.0.0.1",
        audit_syslog_port=receiver.port,
    )  # fmt: skip
    trail = build_audit_trail(settings, client_context=tls.client)
    try:
        # When two refusals are audited
        trail.record(message("PACS_A"))
        trail.record(message("PACS_B"))
        trail.flush()
        wait_until(lambda: len(receiver.messages) == 2, timeout=30)
    finally:
        trail.close()
        receiver.close()

    # Then each arrives as one RFC 5424 message (authpriv.warning, MSGID IHE+RFC-3881) whose XML validates
    for sent, user in zip(receiver.messages, ("PACS_A", "PACS_B"), strict=True):
        header, _, xml = sent.partition(b"\xef\xbb\xbf")
        assert header.startswith(b"<84>1 ") and b" ARCHIVE - IHE+RFC-3881 - " in header
        assert assert_valid(xml).find("ActiveParticipant").get("UserID") == user
    # And the archive authenticated itself with its certificate
    assert (
        receiver.peers and dict(x[0] for x in receiver.peers[0]["subject"])["commonName"] == "archive.local"
    )  # type: ignore[index]


def test_a_repository_that_comes_back_later_still_gets_the_messages(tmp_path: Path) -> None:
    # Given a forwarder whose repository is not listening yet
    ca = CertificateAuthority(tmp_path / "ca")
    archive = ca.archive_server()
    tls = RotatingTls(
        StaticMaterial(TlsMaterial(archive.certificate_pem, archive.key_pem, ca.certificate_pem, "1"))
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    forwarder = SyslogForwarder("127.0.0.1", port, tls.client, app_name="ARCHIVE", retry_seconds=0.2).start()
    trail = AuditTrail(audit.AuditSource("ARCHIVE"), [forwarder])
    trail.record(message("LATE"))

    # When the repository starts on that port
    receiver = SyslogReceiver(ca, tmp_path, port)
    try:
        # Then the message waiting in the queue is delivered
        wait_until(lambda: receiver.messages, timeout=30)
    finally:
        trail.close()
        receiver.close()
    assert b"LATE" in receiver.messages[0]
