"""An upper-layer reactor that sleeps until there is something to do.

pynetdicom's DUL thread (``DULServiceProvider.run_reactor``) polls: when it finds nothing to do it
sleeps 1 ms and looks again. While a C-STORE handler waits for S3, DynamoDB and SQS (tens to
hundreds of ms per instance) the association's DUL thread wakes a thousand times a second for
nothing; profiled, that was about half of the listener's CPU per stored instance
(docs/benchmarks.md, "Ingest: where the listener's CPU went").

``wake_on_work`` (an EVT_CONN_OPEN handler) gives an accepted association's DUL the same loop with
one change: instead of the 1 ms sleep it waits in ``select`` on its socket and on a wake-up
socket that every put into its two queues (primitives to send, state machine events) writes to.
So a received PDU, a response to send or an event wakes it at once, as before, and an idle
association costs nothing. The wait is bounded (``IDLE_WAIT_SECONDS``) so that the ARTIM timer
and a kill from another thread are still seen within that time.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import select
import socket
import ssl
from typing import Any

from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.utils import make_target

LOG = logging.getLogger("archive.dicom")
# Longest wait without a wake-up: how late an expired ARTIM timer or a kill is noticed.
IDLE_WAIT_SECONDS = 0.01


def wake_on_work(event: Any) -> None:
    """EVT_CONN_OPEN: replace the loop of an accepted association's DUL thread before it starts."""
    dul = event.assoc.dul
    if dul.is_alive() or getattr(dul, "_started", None) is None or dul._started.is_set():
        return  # a requestor's DUL runs already: left as pynetdicom made it
    wake_read, wake_write = socket.socketpair()
    wake_read.setblocking(False)
    wake_write.setblocking(False)
    for name in ("to_provider_queue", "event_queue"):
        _wake_on_put(getattr(dul, name), wake_write)
    dul._target = make_target(lambda: _run(dul, wake_read, wake_write))


def _wake_on_put(target: queue.Queue[Any], wake: socket.socket) -> None:
    put = target.put

    def put_and_wake(item: Any, block: bool = True, timeout: float | None = None) -> None:
        put(item, block, timeout)
        with contextlib.suppress(OSError):  # full (a wake-up is pending anyway) or closed
            wake.send(b"\0")

    target.put = put_and_wake  # type: ignore[method-assign]


def _run(dul: Any, wake_read: socket.socket, wake_write: socket.socket) -> None:
    try:
        _reactor(dul, wake_read)
    finally:
        wake_read.close()
        wake_write.close()


def _wait(dul: Any, wake_read: socket.socket) -> None:
    """Until the peer sent something, a queue was put to, or IDLE_WAIT_SECONDS passed."""
    transport = dul.socket
    raw = getattr(transport, "socket", None) if transport is not None else None
    waiting_on: list[Any] = [wake_read]
    if raw is not None and getattr(transport, "_is_connected", False):
        if isinstance(raw, ssl.SSLSocket) and raw.pending():
            return  # decrypted bytes already buffered: select would not see them
        waiting_on.append(raw)
    try:
        select.select(waiting_on, [], [], IDLE_WAIT_SECONDS)
    except (OSError, ValueError):
        return  # a socket closed meanwhile: the loop finds out through pynetdicom's own checks
    with contextlib.suppress(OSError):
        while wake_read.recv(4096):
            pass


def _reactor(dul: Any, wake_read: socket.socket) -> None:
    """pynetdicom 3.0's ``DULServiceProvider.run_reactor``, waiting in ``_wait`` instead of sleeping."""
    dul._idle_timer.start()
    idle = False
    while True:
        if not dul.assoc._dul_ready.is_set():
            dul.assoc._dul_ready.set()
            idle = True
        if idle:
            _wait(dul, wake_read)
        if dul._kill_thread:
            break
        if dul.artim_timer.expired:
            dul.event_queue.put("Evt18")
        try:
            # Either encode and send one primitive or receive and decode one PDU per loop.
            if dul._process_recv_primitive():
                pass
            elif dul._is_transport_event():
                dul._idle_timer.restart()
        except Exception:
            LOG.exception("upper layer failure in the DUL reactor; aborting the association")
            abort = A_ABORT_RQ()
            abort.source = 0x02
            abort.reason_diagnostic = 0x00
            dul.socket.send(abort.encode())
            dul.assoc.is_aborted = True
            dul.assoc.is_established = False
            dul.assoc._kill = True
            dul._kill_thread = True
            return
        try:
            fsm_event = dul.event_queue.get(block=False)
        except queue.Empty:
            idle = True
            continue
        dul.state_machine.do_action(fsm_event)
        idle = False
