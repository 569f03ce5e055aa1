"""The archive's DICOM listener (pynetdicom): C-ECHO, C-STORE and Storage Commitment.

Runs on Fargate behind an NLB and, unchanged, in the local cloud. Each expected failure is mapped
to its DICOM status by exception type; a C-STORE success is sent only after S3 has the object.
"""

from __future__ import annotations

import logging
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any

from archive.data.commitments import CommitmentRepository
from archive.dicom.commitment import request_from_action_information
from archive.errors import (
    AlreadyRejected,
    ArchiveError,
    CommitmentRequestTooLarge,
    DatasetDoesNotMatchSOPClass,
    DuplicateRejectionNote,
    InstanceConflict,
    InvalidCommitmentRequest,
    InvalidDataset,
    NoSuchInstanceToReject,
    ObjectTooLarge,
    PatientIdConflict,
    RejectedInstanceResent,
    RejectionClassConflict,
    RejectionNotAuthorised,
    RetentionExpiryRejectionNotAllowed,
    RetentionNotExpired,
    StorageFailure,
    StudyOfAnotherOrganisation,
    TransactionUIDInUse,
    UntrustedPatientId,
)
from archive.model.organisations import AEInfo
from archive.services.connection_security import PeerAuthenticator
from archive.services.directory import CachedRegistry
from archive.services.ingest import StoreService
from archive.tls.peer import identity_of_socket
from archive.tls.rotation import RotatingTls
from pydicom.dataset import Dataset
from pydicom.uid import AllTransferSyntaxes, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, AllStoragePresentationContexts, _config, evt
from pynetdicom.fsm import InvalidEventError
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.sop_class import StorageCommitmentPushModel, Verification  # type: ignore[attr-defined]

from . import statuses
from .audit import DicomAudit
from .connection import MAX_PDU_BYTES, guard_connection
from .query_retrieve import QUERY_RETRIEVE_MODELS, QueryRetrieveSCP
from .reactor import wake_on_work
from .secure import start_tls_server

LOG = logging.getLogger("archive.dicom")

# Never hold a whole dataset in memory: pynetdicom writes each C-STORE to a spool file as it arrives.
_config.STORE_RECV_CHUNKED_DATASET = True

STATUS_BY_ERROR: tuple[tuple[type[ArchiveError], int], ...] = (
    (InvalidDataset, 0xC000),
    (DatasetDoesNotMatchSOPClass, 0xA900),
    (UntrustedPatientId, 0xA777),
    (StudyOfAnotherOrganisation, 0x0124),
    (PatientIdConflict, 0xA778),
    (InstanceConflict, 0x0124),
    (ObjectTooLarge, 0xA700),
    (StorageFailure, 0xA700),
    # IOCM rejection notes, with dcm4chee-arc's statuses (docs/conformance-iocm.md)
    (DuplicateRejectionNote, 0xA770),
    (RejectedInstanceResent, 0xA771),
    (NoSuchInstanceToReject, 0xA772),
    (RejectionClassConflict, 0xA773),
    (AlreadyRejected, 0xA774),
    (RetentionExpiryRejectionNotAllowed, 0xA775),
    (RetentionNotExpired, 0xA776),
    (RejectionNotAuthorised, 0x0124),
)
STATUS_NOT_AUTHORISED = 0x0124
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_PROCESSING_FAILURE = 0x0110
# N-ACTION of Storage Commitment: anything not recorded in full is a failure the requester sees.
COMMITMENT_STATUS_BY_ERROR: tuple[tuple[type[ArchiveError], int], ...] = (
    (InvalidCommitmentRequest, 0x0115),  # Invalid argument value
    (TransactionUIDInUse, 0x0115),
    (CommitmentRequestTooLarge, 0x0213),  # Resource limitation
    (StorageFailure, STATUS_PROCESSING_FAILURE),
)
# A-ASSOCIATE-RJ: rejected-permanent, service-user, calling AE title not recognised
REJECT_CALLING_AE = (0x01, 0x01, 0x03)


def status_for(exc: Exception) -> int:
    return statuses.status_for(exc, STATUS_BY_ERROR, STATUS_OUT_OF_RESOURCES)


_status = statuses.status_dataset


@dataclass
class ListenerDeps:
    registry: CachedRegistry
    store: StoreService
    commitments: CommitmentRepository
    commitment_wait_seconds: float
    archive_ae_title: str
    # This listener task's identity: the origin of the commitments it receives.
    task_id: str = ""
    query_retrieve: QueryRetrieveSCP | None = None
    # Security (docs/security.md): TLS material for the TLS port, who may connect as which AE,
    # and the audit trail.
    tls: RotatingTls | None = None
    authenticator: PeerAuthenticator | None = None
    audit: DicomAudit | None = None


class LiveAssociations:
    """Associations still open, by Transaction UID, so a report can go back on the same one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_transaction: dict[str, Any] = {}
        # Set on every N-ACTION: wakes the commitment worker, which otherwise sleeps when idle.
        self.arrivals = threading.Event()

    def add(self, transaction_uid: str, assoc: Any) -> None:
        with self._lock:
            self._by_transaction[transaction_uid] = assoc
        self.arrivals.set()

    def pop(self, transaction_uid: str) -> Any | None:
        with self._lock:
            assoc = self._by_transaction.pop(transaction_uid, None)
        if assoc is not None and assoc.is_established:
            return assoc
        return None

    def forget(self, assoc: Any) -> None:
        with self._lock:
            for uid in [u for u, a in self._by_transaction.items() if a is assoc]:
                del self._by_transaction[uid]


class DicomListener:
    """Plain DICOM on ``port`` and DICOM over TLS on ``tls_port`` (either may be None: off)."""

    def __init__(
        self,
        deps: ListenerDeps,
        *,
        host: str,
        port: int | None,
        spool_dir: str | None = None,
        tls_port: int | None = None,
    ) -> None:
        self.deps = deps
        self.host = host
        self.port = port
        self.tls_port = tls_port
        self.live = LiveAssociations()
        # Per open association: the patient identities its C-STOREs resolved (merges followed).
        self._patients: dict[int, dict[str, str]] = {}
        if spool_dir:
            tempfile.tempdir = spool_dir
        self.ae = self._build_ae()
        self._server: Any = None
        self._tls_server: Any = None

    def _build_ae(self) -> AE:
        ae = AE(ae_title=self.deps.archive_ae_title)
        ae.require_called_aet = True
        ae.maximum_associations = 64
        # Bounded (0 would be unlimited); guard_connection refuses longer PDUs. See connection.py.
        ae.maximum_pdu_size = MAX_PDU_BYTES
        ae.network_timeout = 60
        ae.dimse_timeout = 120
        # The acceptor's order decides among the syntaxes a peer proposes in one context. Explicit VR
        # Little Endian first (as DCMTK's storescp and getscu prefer): objects are stored with their
        # VRs, and a C-GET requester proposing both gets them as stored, with no re-encoding.
        preferred = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
        transfer_syntaxes = preferred + [ts for ts in AllTransferSyntaxes if ts not in preferred]
        for context in AllStoragePresentationContexts:
            assert context.abstract_syntax is not None
            # Both roles accepted as proposed: SCP role lets a C-GET requester receive on this association.
            ae.add_supported_context(context.abstract_syntax, transfer_syntaxes, scu_role=True, scp_role=True)
        ae.add_supported_context(Verification)
        ae.add_supported_context(StorageCommitmentPushModel)
        for model in QUERY_RETRIEVE_MODELS:
            ae.add_supported_context(model)
        return ae

    def handlers(self) -> list[Any]:
        return [
            (evt.EVT_CONN_OPEN, set_nodelay),
            (evt.EVT_CONN_OPEN, wake_on_work),
            (evt.EVT_CONN_OPEN, guard_protocol_errors),
            (evt.EVT_CONN_OPEN, guard_connection),
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_RELEASED, self._on_closed),
            (evt.EVT_ABORTED, self._on_closed),
            (evt.EVT_CONN_CLOSE, self._on_closed),
            (evt.EVT_C_ECHO, lambda event: 0x0000),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_N_ACTION, self._on_commitment_request),
            *(self.deps.query_retrieve.handlers() if self.deps.query_retrieve else []),
        ]

    def start(self) -> None:
        if self.port is not None:
            self._server = tuned(
                self.ae.start_server((self.host, self.port), block=False, evt_handlers=self.handlers())
            )
            self.port = self._server.server_address[1]
            LOG.info("DICOM listener %s on %s:%s", self.deps.archive_ae_title, self.host, self.port)
        if self.tls_port is not None:
            if self.deps.tls is None:
                raise RuntimeError("a TLS port needs TLS material (TLS_SECRET_ID)")
            authenticator = self.deps.authenticator
            self._tls_server = tuned(
                start_tls_server(
                    self.ae,
                    (self.host, self.tls_port),
                    tls=self.deps.tls,
                    evt_handlers=self.handlers(),
                    on_refused=authenticator.tls_refused if authenticator else None,
                )
            )
            self.tls_port = self._tls_server.server_address[1]
            LOG.info("DICOM TLS listener %s on %s:%s", self.deps.archive_ae_title, self.host, self.tls_port)

    def stop(self) -> None:
        for server in (self._server, self._tls_server):
            if server is not None:
                server.shutdown()
                server.server_close()
        self._server = self._tls_server = None
        if self.deps.query_retrieve is not None:
            self.deps.query_retrieve.close()  # C-FIND access records still being written

    # --- association -----------------------------------------------------------------------

    def _calling_ae(self, event: Any) -> AEInfo | None:
        return self.deps.registry.find_ae(event.assoc.requestor.ae_title.strip())

    def _on_requested(self, event: Any) -> None:
        calling = event.assoc.requestor.primitive.calling_ae_title.strip()
        address = str(event.assoc.requestor.address)
        refusal = self._refusal(calling, address) or self._certificate_refusal(event, calling, address)
        if refusal:
            LOG.warning("rejecting association from %r at %s: %s", calling, address, refusal)
            event.assoc.acse.send_reject(*REJECT_CALLING_AE)
            evt.trigger(event.assoc, evt.EVT_REJECTED, {})
            event.assoc.kill()

    def _refusal(self, calling: str, address: str) -> str | None:
        """Why an association claiming AE title ``calling`` from ``address`` is refused, if it is.

        The caller is identified by more than its title: the connection must come from an address
        registered for that AE; ``_certificate_refusal`` then checks its certificate.
        """
        ae = self.deps.registry.find_ae(calling)
        if ae is None:
            return "AE title not registered"
        if not ae.admits(address):
            return "not an address registered for this AE"
        return None

    def _certificate_refusal(self, event: Any, calling: str, address: str) -> str | None:
        """The certificate (or, on the plain port, its absence) must fit the AE's organisation."""
        ae = self.deps.registry.find_ae(calling)
        if self.deps.authenticator is None or ae is None:
            return None
        socket_ = getattr(event.assoc.dul.socket, "socket", None)
        verdict = self.deps.authenticator.check_ae(ae, identity_of_socket(socket_), address=address)
        return None if verdict.accepted else verdict.reason

    def _on_closed(self, event: Any) -> None:
        self.live.forget(event.assoc)
        self._patients.pop(id(event.assoc), None)
        if self.deps.audit is not None:
            self.deps.audit.association_ended(event.assoc)

    # --- C-STORE ---------------------------------------------------------------------------

    def _on_store(self, event: Any) -> Dataset:
        calling = self._calling_ae(event)
        if calling is None or "store" not in calling.roles:
            return _status(STATUS_NOT_AUTHORISED, "calling AE may not store")
        request = event.request
        try:
            org = self.deps.registry.organisation(calling.org_oid)
            outcome = self.deps.store.store(
                event.dataset_path,
                transfer_syntax=str(event.context.transfer_syntax),
                sop_class_uid=str(request.AffectedSOPClassUID),
                sop_instance_uid=str(request.AffectedSOPInstanceUID),
                calling_ae=calling.ae_title,
                org=org,
                patients=self._patients.setdefault(id(event.assoc), {}),
            )
        except ArchiveError as exc:
            status = status_for(exc)
            LOG.warning("C-STORE from %s refused 0x%04X: %s", calling.ae_title, status, exc)
            if self.deps.audit is not None:
                self.deps.audit.store_refused(event.assoc, calling.ae_title, status)
            return _status(status, str(exc))
        except Exception as exc:  # any other failure: nothing acknowledged, sender may retry
            LOG.exception("C-STORE from %s failed", calling.ae_title)
            if self.deps.audit is not None:
                self.deps.audit.store_refused(event.assoc, calling.ae_title, STATUS_OUT_OF_RESOURCES)
            return _status(STATUS_OUT_OF_RESOURCES, f"processing failure: {type(exc).__name__}")
        if self.deps.audit is not None:
            self.deps.audit.stored(
                event.assoc,
                calling.ae_title,
                outcome.patient.key,
                outcome.header.study_uid,
                outcome.header.sop_class_uid,
            )
        LOG.debug(
            "stored %s from %s%s",
            outcome.header.sop_instance_uid,
            calling.ae_title,
            " (duplicate, identical)" if outcome.duplicate else "",
        )
        if outcome.tolerated:
            LOG.warning(
                "stored %s from %s as received, tolerating: %s",
                outcome.header.sop_instance_uid,
                calling.ae_title,
                ", ".join(outcome.tolerated),
            )
        return _status(0x0000)

    # --- Storage Commitment ----------------------------------------------------------------

    def _on_commitment_request(self, event: Any) -> tuple[int | Dataset, Dataset | None]:
        calling = self._calling_ae(event)
        if calling is None or "commitment" not in calling.roles:
            return _status(STATUS_NOT_AUTHORISED, "calling AE may not request storage commitment"), None
        request = event.request
        if str(request.RequestedSOPClassUID) != StorageCommitmentPushModel:
            return 0x0118, None  # No such SOP Class
        if request.ActionTypeID != 1:
            return 0x0123, None  # No such action
        try:
            commitment = request_from_action_information(event.action_information)
            now = time.time()
            created = self.deps.commitments.create(
                commitment,
                requester_ae=calling.ae_title,
                org_oid=calling.org_oid,
                origin=self.deps.task_id,
                now=now,
                deadline=now + self.deps.commitment_wait_seconds,
            )
            if not created:
                earlier = self.deps.commitments.get(commitment.transaction_uid)
                if earlier is None or earlier.requester_ae != calling.ae_title:
                    raise TransactionUIDInUse("Transaction UID already used by another requester")
        except ArchiveError as exc:
            status = commitment_status_for(exc)
            LOG.warning("N-ACTION from %s refused 0x%04X: %s", calling.ae_title, status, exc)
            return _status(status, str(exc)), None
        except Exception as exc:  # nothing recorded: the requester must not think it was
            LOG.exception("N-ACTION from %s failed", calling.ae_title)
            return _status(STATUS_PROCESSING_FAILURE, f"processing failure: {type(exc).__name__}"), None
        # A resend of a pending transaction may be answered on the newer association.
        self.live.add(commitment.transaction_uid, event.assoc)
        LOG.info(
            "commitment %s for %d instances from %s%s",
            commitment.transaction_uid,
            len(commitment.references),
            calling.ae_title,
            "" if created else " (repeated Transaction UID)",
        )
        return 0x0000, None


def commitment_status_for(exc: Exception) -> int:
    return statuses.status_for(exc, COMMITMENT_STATUS_BY_ERROR, STATUS_PROCESSING_FAILURE)


def guard_protocol_errors(event: Any) -> None:
    """Close an association cleanly when its upper-layer state machine fails.

    pynetdicom raises out of its DUL reactor thread when an event is not valid in the current state
    (for example a peer's second A-RELEASE-RQ crossing the archive's A-RELEASE-RP, so the response
    arrives after the abort it provoked): the thread dies with a traceback and the socket is left
    open. The archive logs the violation, sends an A-ABORT if the association still stands, and
    closes the connection; the listener goes on serving everyone else.
    """
    dul = event.assoc.dul
    machine = dul.state_machine
    do_action = machine.do_action

    def guarded(fsm_event: str) -> None:
        try:
            do_action(fsm_event)
        except Exception as exc:
            state = machine.current_state
            peer = getattr(event.assoc.requestor, "address", "?")
            if isinstance(exc, InvalidEventError):
                LOG.warning(
                    "protocol violation from %s (%s in %s); closing the association", peer, fsm_event, state
                )
            else:
                LOG.error("upper layer failure on the association from %s; closing it", peer, exc_info=True)
            _close(event.assoc, send_abort=state not in ("Sta1", "Sta13"))

    machine.do_action = guarded  # type: ignore[method-assign]


def _close(assoc: Any, *, send_abort: bool) -> None:
    dul = assoc.dul
    sock = dul.socket
    if sock is not None and send_abort:
        abort = A_ABORT_RQ()
        abort.source = 0x02  # service provider
        abort.reason_diagnostic = 0x00
        sock.send(abort.encode())  # AssociationSocket.send swallows a broken connection
    assoc.is_aborted = True
    assoc.is_established = False
    assoc._kill = True
    dul._kill_thread = True
    if sock is not None:
        sock.close()


def tuned(server: Any) -> Any:
    """The server, its associations sharing its presentation contexts (``SharedContexts``) and its
    loop no longer forcing a full garbage collection every 60 polls.

    pynetdicom's ``AssociationServer.service_actions`` calls ``gc.collect()`` about every 30 s;
    the listener holds some 450,000 objects (mostly botocore's service models), so each forced
    pass walks all of them (0.1-0.3 s of CPU with the GIL held, stalling every association).
    Python's own generational collector still frees the cycles of ended associations.
    """
    server.contexts = SharedContexts(server.contexts)
    server.service_actions = lambda: None
    return server


class SharedContexts(list[Any]):
    """A server's supported presentation contexts, shared by its associations.

    pynetdicom deep-copies them into every association it accepts (170 storage SOP classes with
    39 transfer syntaxes each: about 80 ms of CPU per association here), though the acceptor's
    negotiation only reads them and builds new contexts for the result. A copy of the list is
    enough to keep the server's own list untouched.
    """

    def __deepcopy__(self, memo: dict[int, Any]) -> list[Any]:
        return list(self)


def set_nodelay(event: Any) -> None:
    """Without TCP_NODELAY every DIMSE exchange stalls ~40 ms on delayed ACKs."""
    sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
