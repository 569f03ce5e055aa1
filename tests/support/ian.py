"""A customer's IAN receiver: a pynetdicom SCP of Instance Availability Notification (N-CREATE)."""

from __future__ import annotations

import queue
import socket
import ssl
import threading
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import InstanceAvailabilityNotification, Verification  # type: ignore[attr-defined]


@dataclass
class ReceivedNotice:
    calling_ae: str
    sop_instance_uid: str
    dataset: Dataset

    @property
    def study_uid(self) -> str:
        return str(self.dataset.StudyInstanceUID)

    def instances(self) -> dict[str, tuple[str, str, str, str]]:
        """SOP Instance UID -> (series UID, SOP Class UID, availability, Retrieve AE Title)."""
        out = {}
        for series in self.dataset.ReferencedSeriesSequence:
            for item in series.ReferencedSOPSequence:
                out[str(item.ReferencedSOPInstanceUID)] = (
                    str(series.SeriesInstanceUID),
                    str(item.ReferencedSOPClassUID),
                    str(item.InstanceAvailability),
                    str(item.RetrieveAETitle),
                )
        return out


class IanReceiver:
    """Accepts IAN N-CREATEs and keeps them; ``hold`` makes it keep each request unanswered until
    ``release`` (to kill the sender in the middle of a delivery)."""

    def __init__(
        self, ae_title: str, port: int, *, hold: bool = False, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self.notices: queue.Queue[ReceivedNotice] = queue.Queue()
        self.all: list[ReceivedNotice] = []
        self.holding = threading.Event()
        self._release = threading.Event()
        if not hold:
            self._release.set()
        self.ae = AE(ae_title=ae_title)
        self.ae.add_supported_context(InstanceAvailabilityNotification)
        self.ae.add_supported_context(Verification)
        self.server = self.ae.start_server(
            ("127.0.0.1", port),
            block=False,
            evt_handlers=[(evt.EVT_CONN_OPEN, _nodelay), (evt.EVT_N_CREATE, self._on_create)],
            ssl_context=ssl_context,
        )
        self.port = port

    def _on_create(self, event: Any) -> tuple[int, Dataset]:
        notice = ReceivedNotice(
            event.assoc.requestor.ae_title.strip(),
            str(event.request.AffectedSOPInstanceUID),
            event.attribute_list,
        )
        self.all.append(notice)
        self.holding.set()
        self._release.wait(60)
        self.notices.put(notice)
        return 0x0000, event.attribute_list

    def release(self) -> None:
        self._release.set()

    def wait_for(self, study_uid: str, *, count: int | None = None, timeout: float = 60.0) -> ReceivedNotice:
        """The next notice for ``study_uid`` (with ``count`` instances, if given); others are kept."""
        deadline = threading.Event()
        timer = threading.Timer(timeout, deadline.set)
        timer.start()
        try:
            while not deadline.is_set():
                try:
                    notice = self.notices.get(timeout=0.2)
                except queue.Empty:
                    continue
                if notice.study_uid == study_uid and (count is None or len(notice.instances()) == count):
                    return notice
        finally:
            timer.cancel()
        raise AssertionError(f"no IAN for {study_uid} within {timeout}s")

    def studies(self) -> set[str]:
        return {n.study_uid for n in self.all}

    def stop(self) -> None:
        self._release.set()
        self.server.shutdown()


def _nodelay(event: Any) -> None:
    event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
