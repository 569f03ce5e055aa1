"""Query/Retrieve SCP of the DICOM listener: C-FIND, C-MOVE and C-GET (Patient and Study Root).

Handlers only translate between DIMSE and the core: the core plans lookups
(``archive.services.query.find``), prepares objects to send (``archive.services.query.retrieve``)
and the access record is written for every request, refused ones included
(``archive.data.access_log``); for C-MOVE and C-GET a first record lists what is about to be sent
before the first object leaves, and a second one completes it. A C-FIND's record is written after
its last match has left (docs/disclosure-log.md), on a background thread while the final response
goes out, so the requester does not wait for it; ``close`` waits for those still being written.
Expected failures map to statuses by type; sub-operations are sent from spool files by
``connection.StoreSender``, with Pending responses at most once a second
(``connection.PendingResponses``).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from archive.data.access_log import AccessEvent, AccessLog, Disclosed
from archive.errors import (
    AccessRecordNotWritten,
    ArchiveError,
    CountryWideQuery,
    NotAuthorised,
    QueryRefused,
    TranscodingImpossible,
    UnknownMoveDestination,
)
from archive.model.organisations import AEInfo
from archive.services.directory import CachedRegistry
from archive.services.query.find import PATIENT_ROOT, STUDY_ROOT, QueryRequest, QueryService
from archive.services.query.retrieve import Prepared, RetrieveItem, RetrieveService
from archive.services.storage_tiers import StorageTiers
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import build_context, evt
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from . import statuses
from .audit import DicomAudit
from .connection import PendingResponses, SpooledSubOperation, StoreSender, guard_connection, keep_alive

LOG = logging.getLogger("archive.dicom.qr")

QUERY_RETRIEVE_MODELS = (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelMove,
    PatientRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelGet,
)
PATIENT_ROOT_MODELS = frozenset(
    {
        PatientRootQueryRetrieveInformationModelFind,
        PatientRootQueryRetrieveInformationModelMove,
        PatientRootQueryRetrieveInformationModelGet,
    }
)
ROLE_QUERY = "query"
ROLE_RETRIEVE = "retrieve"
ROLE_MOVE_DESTINATION = "move-destination"
MAX_PRESENTATION_CONTEXTS = 128

PENDING = 0xFF00
CANCEL = 0xFE00
STATUS_BY_ERROR: tuple[tuple[type[ArchiveError], int], ...] = (
    (NotAuthorised, 0x0124),  # Refused: Not authorised
    (CountryWideQuery, 0xA900),  # Identifier does not match SOP Class (see the conformance doc)
    (QueryRefused, 0xA900),
    (UnknownMoveDestination, 0xA801),
)
STATUS_UNABLE_TO_PROCESS = 0xC000
# Failure: out of resources, unable to perform sub-operations (C-MOVE/C-GET, PS3.4 C.4.2.1.5)
STATUS_UNABLE_TO_PERFORM_SUB_OPERATIONS = 0xA702
ERROR_COMMENT_MAX = 64  # Error Comment (0000,0902) is LO


def status_for(exc: Exception) -> int:
    return statuses.status_for(exc, STATUS_BY_ERROR, STATUS_UNABLE_TO_PROCESS)


_status = statuses.status_dataset


def accepts(assoc: Any, sop_class_uid: str, transfer_syntax: str) -> bool:
    """Whether ``assoc`` has an accepted context in which the archive can send this as SCU."""
    return any(
        cx.abstract_syntax == sop_class_uid and cx.transfer_syntax[0] == transfer_syntax and cx.as_scu
        for cx in assoc.accepted_contexts
    )


def move_contexts(items: list[RetrieveItem]) -> list[PresentationContext]:
    """Per SOP class an uncompressed fallback (Explicit VR LE, Implicit VR LE) and each stored
    syntax in a context of its own, so a receiver that takes the stored syntax gets the object
    as stored; fallbacks first, within the 128 presentation contexts an association can carry."""
    fallback = {
        (item.sop_class_uid, (ExplicitVRLittleEndian, ImplicitVRLittleEndian)): None for item in items
    }
    stored = {(item.sop_class_uid, (item.transfer_syntax_uid,)): None for item in items}
    ordered = list(fallback) + list(stored)
    return [build_context(sop, list(syntaxes)) for sop, syntaxes in ordered[:MAX_PRESENTATION_CONTEXTS]]


# Threads writing C-FIND access records (one PutItem per patient-study each).
ACCESS_RECORD_WRITERS = 4


@dataclass
class _Operation:
    """Book-keeping of one request for its access record."""

    name: str
    calling: AEInfo | None
    calling_title: str
    request: QueryRequest | None = None
    destination: str | None = None
    # Stays INCOMPLETE if the peer or the move destination goes away before the end.
    outcome: str = "INCOMPLETE"
    disclosed: list[Disclosed] = field(default_factory=list)
    sop_classes: dict[str, str] = field(default_factory=dict)  # SOP Instance UID -> SOP Class UID
    # One id for the records of one request (C-MOVE/C-GET: the "started" and the completing one).
    event_id: str = field(default_factory=lambda: uuid.uuid4().hex)


class QueryRetrieveSCP:
    def __init__(
        self,
        registry: CachedRegistry,
        queries: QueryService,
        retrievals: RetrieveService,
        access_log: AccessLog,
        *,
        on_conn_open: Callable[[Any], None] | None = None,
        audit: DicomAudit | None = None,
        destination_arguments: Callable[[AEInfo], dict[str, Any]] | None = None,
        restores: StorageTiers | None = None,
    ) -> None:
        self._registry = registry
        self._queries = queries
        self._retrievals = retrievals
        self._access_log = access_log
        self._on_conn_open = on_conn_open
        self._audit = audit
        # Extra associate() arguments for a move destination: TLS when it is registered for it.
        self._destination_arguments = destination_arguments
        # Instances in a cold storage class: their study's restore is started, they fail with
        # an Error Comment saying when to retry (docs/conformance-query-retrieve.md).
        self._restores = restores
        # C-FIND access records, written while the final response is sent (see the module doc).
        self._records = ThreadPoolExecutor(
            max_workers=ACCESS_RECORD_WRITERS, thread_name_prefix="access-record"
        )

    def close(self) -> None:
        """Wait for every C-FIND access record still being written (the listener is stopping)."""
        self._records.shutdown(wait=True)

    def handlers(self) -> list[Any]:
        return [
            (evt.EVT_C_FIND, self.on_find),
            (evt.EVT_C_MOVE, self.on_move),
            (evt.EVT_C_GET, self.on_get),
        ]

    # --- common ----------------------------------------------------------------------------

    def _begin(self, event: Any, name: str, role: str) -> _Operation:
        title = event.assoc.requestor.ae_title.strip()
        calling = self._registry.find_ae(title)
        operation = _Operation(name, calling, title)
        if calling is None or role not in calling.roles:
            raise NotAuthorised(f"{title} lacks role {role}")
        root = PATIENT_ROOT if event.context.abstract_syntax in PATIENT_ROOT_MODELS else STUDY_ROOT
        try:
            identifier = event.identifier
        except Exception as exc:  # pynetdicom decodes lazily; any decoding failure is the peer's
            raise QueryRefused(f"identifier cannot be decoded: {type(exc).__name__}") from exc
        operation.request = QueryRequest.from_identifier(identifier, root)
        return operation

    def _event(self, operation: _Operation, outcome: str) -> AccessEvent:
        calling = operation.calling
        request = operation.request
        return AccessEvent(
            operation=operation.name,
            calling_ae=operation.calling_title,
            org_oid=calling.org_oid if calling else "unknown",
            level=request.level if request else None,
            query=request.summary() if request else {},
            outcome=outcome,
            destination_ae=operation.destination,
            at=datetime.now(UTC),
            event_id=operation.event_id,
        )

    def _record_start(self, operation: _Operation, items: list[RetrieveItem]) -> None:
        """Before the first object leaves: what is about to be sent (so a crash mid-retrieval
        leaves a record of every instance that may have been disclosed)."""
        planned = [
            Disclosed(i.patient.patient_key, i.controller_oid, i.study_uid, [i.sop_instance_uid])
            for i in items
        ]
        try:
            self._access_log.record(self._event(operation, f"STARTED ({len(items)} to send)"), planned)
        except Exception as exc:
            LOG.exception("access record of %s by %s not written", operation.name, operation.calling_title)
            raise AccessRecordNotWritten("access record could not be written; nothing sent") from exc

    def _record(self, operation: _Operation, dimse: Any = None, *, in_background: bool = False) -> None:
        """The audit message (buffered) and the access record; with ``in_background`` the access
        record is written by a background thread and this returns at once."""
        if self._audit is not None and dimse is not None:
            try:
                if operation.name == "C-FIND":
                    self._audit.queried(
                        dimse, operation.calling_title, operation.disclosed, operation.outcome
                    )
                else:
                    self._audit.retrieved(
                        dimse,
                        operation.name,
                        operation.calling_title,
                        operation.destination,
                        operation.disclosed,
                        operation.outcome,
                        operation.sop_classes,
                    )
            except Exception:
                LOG.exception("AUDIT RECORD LOST: %s by %s", operation.name, operation.calling_title)
        event = self._event(operation, operation.outcome)
        if in_background:
            try:
                self._records.submit(self._write_record, operation, event)
                return
            except RuntimeError:  # closing: write it here instead
                pass
        self._write_record(operation, event)

    def _write_record(self, operation: _Operation, event: AccessEvent) -> None:
        try:
            self._access_log.record(event, operation.disclosed)
        except Exception:
            # The disclosure already happened; losing its record is an operational alarm.
            LOG.exception("ACCESS RECORD LOST: %s by %s", operation.name, operation.calling_title)

    def _refused(self, operation: _Operation | None, name: str, event: Any, exc: Exception) -> Dataset:
        status = status_for(exc)
        LOG.warning("%s from %s refused 0x%04X: %s", name, event.assoc.requestor.ae_title, status, exc)
        if operation is not None:
            operation.outcome = f"REFUSED 0x{status:04X}: {exc}"
        return _status(status, str(exc))

    # --- C-FIND ----------------------------------------------------------------------------

    def on_find(self, event: Any) -> Iterator[tuple[int | Dataset, Dataset | None]]:
        operation = _Operation("C-FIND", None, event.assoc.requestor.ae_title.strip())
        try:
            operation = self._begin(event, "C-FIND", ROLE_QUERY)
            assert operation.calling is not None and operation.request is not None
            for match in self._queries.find(operation.request, operation.calling.org_oid):
                if event.is_cancelled:
                    operation.outcome = "CANCELLED"
                    yield CANCEL, None
                    return
                operation.disclosed.append(
                    Disclosed(
                        match.patient_key,
                        match.controller_oid,
                        match.study_uid,
                        list(match.sop_instance_uids),
                    )
                )
                yield PENDING, match.identifier
            operation.outcome = "COMPLETED"
        except ArchiveError as exc:
            yield self._refused(operation, "C-FIND", event, exc), None
        except Exception as exc:
            LOG.exception("C-FIND failed")
            operation.outcome = f"FAILED: {type(exc).__name__}"
            yield _status(STATUS_UNABLE_TO_PROCESS, f"processing failure: {type(exc).__name__}"), None
        finally:
            # Every match has left: the record is written while the final response goes out.
            self._record(operation, event, in_background=True)

    # --- C-MOVE ----------------------------------------------------------------------------

    def on_move(self, event: Any) -> Iterator[Any]:
        name = "C-MOVE"
        operation = _Operation(name, None, event.assoc.requestor.ae_title.strip())
        operation.destination = str(event.request.MoveDestination or "").strip()
        try:
            try:
                destination_title = operation.destination
                operation = self._begin(event, name, ROLE_RETRIEVE)
                operation.destination = destination_title
                destination = self._destination(operation)
                assert operation.calling is not None and operation.request is not None
                items = self._retrievals.plan(operation.request, operation.calling.org_oid)
            except UnknownMoveDestination as exc:
                self._refused(operation, name, event, exc)
                yield None, None  # pynetdicom answers 0xA801 Move Destination unknown
                return
            except ArchiveError as exc:
                # pynetdicom's C-MOVE SCP takes no status before the destination: raising here makes
                # it answer 0xC514 (Failure: Unable to process); the reason is in the access record.
                self._refused(operation, name, event, exc)
                raise
            store: dict[str, Any] = {}

            def on_accepted(accepted_event: Any) -> None:
                store["sender"] = StoreSender(accepted_event.assoc)
                store["assoc"] = accepted_event.assoc

            handlers: list[Any] = [
                (evt.EVT_ACCEPTED, on_accepted),
                (evt.EVT_CONN_OPEN, guard_connection),
            ]
            if self._on_conn_open is not None:
                handlers.append((evt.EVT_CONN_OPEN, self._on_conn_open))
            extra = self._destination_arguments(destination) if self._destination_arguments else {}
            yield (
                destination.host,
                destination.port,
                {"contexts": move_contexts(items), "evt_handlers": handlers, **extra},
            )
            yield len(items)

            def accepted(sop_class_uid: str, transfer_syntax: str) -> bool:
                return "assoc" in store and accepts(store["assoc"], sop_class_uid, transfer_syntax)

            def sending() -> bool:
                return "assoc" in store and bool(store["assoc"].is_established)

            def waiting() -> None:
                keep_alive(event.assoc)
                if "assoc" in store:
                    keep_alive(store["assoc"])

            pending = PendingResponses(event.assoc)
            try:
                yield from self._sub_operations(event, operation, items, accepted, sending, waiting)
            finally:
                pending.close()
        finally:
            self._record(operation, event)

    def _destination(self, operation: _Operation) -> AEInfo:
        assert operation.calling is not None
        title = operation.destination or ""
        destination = self._registry.find_ae(title)
        if (
            destination is None
            or destination.org_oid != operation.calling.org_oid
            or ROLE_MOVE_DESTINATION not in destination.roles
        ):
            raise UnknownMoveDestination(
                f"{title!r} is not a move destination of {operation.calling.org_oid}"
            )
        return destination

    # --- C-GET -----------------------------------------------------------------------------

    def on_get(self, event: Any) -> Iterator[Any]:
        name = "C-GET"
        operation = _Operation(name, None, event.assoc.requestor.ae_title.strip())
        try:
            try:
                operation = self._begin(event, name, ROLE_RETRIEVE)
                assert operation.calling is not None and operation.request is not None
                items = self._retrievals.plan(operation.request, operation.calling.org_oid)
            except ArchiveError as exc:
                # C-GET takes a count first; one failed "sub-operation" carries the refusal status.
                status = self._refused(operation, name, event, exc)
                yield 1
                yield status, None
                return
            yield len(items)
            sender = StoreSender(event.assoc)
            pending = PendingResponses(event.assoc)
            try:
                yield from self._sub_operations(
                    event,
                    operation,
                    items,
                    lambda sop, ts: accepts(event.assoc, sop, ts),
                    lambda: bool(event.assoc.is_established),
                    lambda: keep_alive(event.assoc),
                )
            finally:
                pending.close()
                sender.detach()
        finally:
            self._record(operation, event)

    # --- sub-operations --------------------------------------------------------------------

    def _sub_operations(
        self,
        event: Any,
        operation: _Operation,
        items: list[RetrieveItem],
        accepted: Callable[[str, str], bool],
        sending: Callable[[], bool],
        waiting: Callable[[], None],
    ) -> Iterator[tuple[int | Dataset, Dataset | None]]:
        """One (status, sub-operation) per item; the archive's own failures are counted by the
        sender as failed sub-operations and summarised in the Error Comment of the responses."""
        if not items:
            operation.outcome = "COMPLETED"
            return
        # NEARLINE instances are not read: ONLINE ones are sent first, then the NEARLINE ones
        # fail with the restore's retry time as the Error Comment of the final response.
        nearline = [i for i in items if i.nearline]
        online = [i for i in items if not i.nearline]
        try:
            self._record_start(operation, online)
        except AccessRecordNotWritten as exc:
            operation.outcome = f"FAILED: {exc}"
            yield _status(STATUS_UNABLE_TO_PERFORM_SUB_OPERATIONS, str(exc)[:ERROR_COMMENT_MAX]), None
            return
        failures: list[str] = []
        nearline_comment = self._restore_for(operation, nearline) if nearline else ""
        items = online
        # A large object read slowly must not idle out the requester's or the destination's association.
        prepared_items = self._retrievals.prepared(items, accepted, waiting)
        handed_over: Prepared | None = None
        try:
            for position, prepared in enumerate(prepared_items):
                keep_alive(event.assoc)
                if event.is_cancelled:
                    prepared.discard()
                    operation.outcome = "CANCELLED"
                    yield CANCEL, None
                    return
                if not sending():
                    prepared.discard()
                    failures.append("receiver association ended")
                    yield from self._unsent(items[position:] + nearline, failures)
                    nearline = []
                    break
                item = prepared.item
                if not prepared.sendable:
                    failures.append(self._failure(operation, prepared))
                else:
                    operation.sop_classes[item.sop_instance_uid] = item.sop_class_uid
                    operation.disclosed.append(
                        Disclosed(
                            item.patient.patient_key,
                            item.controller_oid,
                            item.study_uid,
                            [item.sop_instance_uid],
                        )
                    )
                sub_operation = SpooledSubOperation(
                    item.sop_class_uid,
                    item.sop_instance_uid,
                    prepared.path,
                    prepared.discard,
                    encoded=prepared.encoded,
                    transfer_syntax=prepared.transfer_syntax_uid,
                )
                handed_over = prepared
                yield self._pending(failures), sub_operation
        finally:
            prepared_items.close()
            if handed_over is not None:
                handed_over.discard()  # sent already (a no-op), or never sent: the peer went away
            keep_alive(event.assoc)
        if nearline:
            failures.extend([nearline_comment] * len(nearline))
            yield from self._unsent(nearline, failures)
        items = online + nearline
        operation.outcome = (
            f"COMPLETED ({len(failures)} of {len(items)} not sent: {_summary(failures)})"
            if failures
            else "COMPLETED"
        )

    def _restore_for(self, operation: _Operation, nearline: list[RetrieveItem]) -> str:
        """Start (or join) the restore of the studies of ``nearline``; the comment for the answer."""
        if self._restores is None:
            return "NEARLINE: needs a restore (ask the archive operator)"
        try:
            ticket = self._restores.for_retrieval((i.study_uid for i in nearline), operation.calling_title)
        except Exception:
            LOG.exception("restore for %s not started", operation.calling_title)
            return "NEARLINE: restore could not be started; retry later"
        if ticket is None:
            return "NEARLINE: needs a restore (ask the archive operator)"
        LOG.info(
            "%s by %s: %d NEARLINE instances; restore %s until %s",
            operation.name,
            operation.calling_title,
            len(nearline),
            ticket.state,
            ticket.ready_by.isoformat(),
        )
        return ticket.retry_comment()

    @staticmethod
    def _failure(operation: _Operation, prepared: Prepared) -> str:
        kind = "transfer syntax" if isinstance(prepared.error, TranscodingImpossible) else "read"
        LOG.warning(
            "%s sub-operation %s fails (%s): %s",
            operation.name,
            prepared.item.sop_instance_uid,
            kind,
            prepared.error,
        )
        return str(prepared.error)

    def _unsent(self, rest: list[RetrieveItem], failures: list[str]) -> Iterator[tuple[Dataset, Dataset]]:
        for item in rest:
            yield (
                self._pending(failures),
                SpooledSubOperation(item.sop_class_uid, item.sop_instance_uid, None),
            )

    @staticmethod
    def _pending(failures: list[str]) -> Dataset:
        """Pending status; once a sub-operation failed, with an Error Comment saying why. pynetdicom
        keeps the comment on the response it builds next, so the final response carries it too."""
        status = Dataset()
        status.Status = PENDING
        if failures:
            status.ErrorComment = f"{len(failures)} failed: {_summary(failures)}"[:ERROR_COMMENT_MAX]
        return status


def _summary(failures: list[str]) -> str:
    return failures[-1] if failures else ""
