"""A modality's side of Storage Commitment for the benchmark: N-ACTION, then wait for the report.

The report is taken on the same association (our archive sends it there while it is open) or on a
new association to the requester's own SCP (Orthanc always opens a new one). Either way the clock
stops when the N-EVENT-REPORT arrives.
"""

from __future__ import annotations

import queue
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import StorageCommitmentPushModel  # type: ignore[attr-defined]

from .data import new_uid

COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"


def set_nodelay(event: Any) -> None:
    """pynetdicom leaves Nagle on; every DIMSE exchange would stall on delayed ACKs without this."""
    event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


@dataclass(frozen=True)
class CommitmentOutcome:
    event_type: int  # 1 all committed, 2 failures exist, 0 no report in time
    committed: int
    failed: int
    seconds: float  # from the call (right after the last C-STORE) to the report
    same_association: bool


class CommitmentRequester:
    """One requester AE with its own SCP for reports that come on a new association."""

    def __init__(self, ae_title: str, port: int, report_timeout: float = 600.0) -> None:
        self.ae_title = ae_title
        self.report_timeout = report_timeout  # no report by then: event type 0, the run goes on
        self.reports: queue.Queue[tuple[float, bool, int, Dataset]] = queue.Queue()
        self.ae = AE(ae_title=ae_title)
        self.ae.network_timeout = 120
        self.ae.dimse_timeout = 600
        self.ae.acse_timeout = 30
        self.ae.add_requested_context(StorageCommitmentPushModel)
        self.ae.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
        server = self.ae.start_server(
            ("127.0.0.1", port),
            block=False,
            evt_handlers=[(evt.EVT_CONN_OPEN, set_nodelay), (evt.EVT_N_EVENT_REPORT, self._on_new_assoc)],
        )
        assert server is not None
        self.server = server
        self.port = int(self.server.server_address[1])

    def _on_new_assoc(self, event: Any) -> tuple[int, None]:
        self.reports.put((time.monotonic(), False, int(event.request.EventTypeID), event.event_information))
        return 0x0000, None

    def _on_same_assoc(self, event: Any) -> tuple[int, None]:
        self.reports.put((time.monotonic(), True, int(event.request.EventTypeID), event.event_information))
        return 0x0000, None

    def request(
        self,
        host: str,
        port: int,
        called: str,
        references: Sequence[tuple[str, str]],
        timeout: float | None = None,
    ) -> CommitmentOutcome:
        """Send the N-ACTION for ``references`` and wait for the report; the clock starts now."""
        timeout = self.report_timeout if timeout is None else timeout
        while not self.reports.empty():
            self.reports.get_nowait()
        start = time.monotonic()
        assoc = self.ae.associate(
            host,
            port,
            ae_title=called,
            evt_handlers=[(evt.EVT_CONN_OPEN, set_nodelay), (evt.EVT_N_EVENT_REPORT, self._on_same_assoc)],
        )
        if not assoc.is_established:
            raise RuntimeError(f"commitment association to {called} at {host}:{port} refused")
        try:
            info = Dataset()
            info.TransactionUID = new_uid()
            items = []
            for sop_class, sop_instance in references:
                item = Dataset()
                item.ReferencedSOPClassUID = sop_class
                item.ReferencedSOPInstanceUID = sop_instance
                items.append(item)
            info.ReferencedSOPSequence = items
            status, _ = assoc.send_n_action(info, 1, StorageCommitmentPushModel, COMMITMENT_INSTANCE)
            if getattr(status, "Status", None) != 0x0000:
                raise RuntimeError(f"N-ACTION answered {status}")
            try:
                at, same, event_type, event_info = self.reports.get(timeout=timeout)
            except queue.Empty:
                return CommitmentOutcome(0, 0, 0, time.monotonic() - start, False)
        finally:
            if assoc.is_established:
                assoc.release()
        return CommitmentOutcome(
            event_type=event_type,
            committed=len(event_info.get("ReferencedSOPSequence", []) or []),
            failed=len(event_info.get("FailedSOPSequence", []) or []),
            seconds=at - start,
            same_association=same,
        )

    def stop(self) -> None:
        self.server.shutdown()
