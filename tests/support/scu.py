"""A pynetdicom SCU playing a modality: C-STORE, then Storage Commitment (N-ACTION), receiving the
N-EVENT-REPORT on the same association or, as the requester's SCP, on a new one."""

from __future__ import annotations

import queue
import socket
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, _config, build_role, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    MRImageStorage,
    SecondaryCaptureImageStorage,
    StorageCommitmentPushModel,
    Verification,
)

from tests.support.dicom import new_uid

COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"


@contextmanager
def raw_sending() -> Iterator[None]:
    """Make pynetdicom send a file's dataset bytes exactly as they are in the file (no re-encoding),
    under the SOP Class, Instance and syntax its file meta names."""
    previous = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        yield
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = previous


def part10(
    meta_sop_class: str, meta_sop_instance: str, transfer_syntax: str, dataset_bytes: bytes, path: Path
) -> Path:
    """Write a Part-10 file with the given meta and arbitrary (possibly broken) dataset bytes."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.filewriter import write_file_meta_info

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = meta_sop_class
    meta.MediaStorageSOPInstanceUID = meta_sop_instance
    meta.TransferSyntaxUID = transfer_syntax
    meta.ImplementationClassUID = "1.2.826.0.1.3680043.10.1394.1"
    with open(path, "wb") as fp:
        fp.write(b"\0" * 128 + b"DICM")
        write_file_meta_info(fp, meta)  # type: ignore[arg-type]
        fp.write(dataset_bytes)
    return path


@dataclass
class Report:
    event_type: int
    info: Dataset
    same_association: bool


def _nodelay(event: Any) -> None:
    event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def action_information(refs: Iterable[tuple[str, str]], transaction_uid: str | None = None) -> Dataset:
    ds = Dataset()
    ds.TransactionUID = transaction_uid or new_uid()
    items = []
    for sop_class, sop_instance in refs:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = sop_instance
        items.append(item)
    ds.ReferencedSOPSequence = items
    return ds


class Modality:
    """One SCU association to the archive with storage and commitment contexts."""

    def __init__(
        self, port: int, ae_title: str = "DEMO_MOD", called: str = "ARCHIVE", tls_args: Any = None
    ) -> None:
        self.reports: queue.Queue[Report] = queue.Queue()
        # A report is handed to the test only once its response is on the wire: a release started
        # while pynetdicom still sends the N-EVENT-REPORT-RSP kills its reactor (Evt9 in Sta7) and
        # the archive never hears the answer. EVT_DIMSE_SENT is not late enough: pynetdicom fires
        # it before queueing the message's P-DATA, so the first P-DATA-TF sent after it is the one.
        self._answering: queue.Queue[Report] = queue.Queue()
        self._answered: queue.Queue[Report] = queue.Queue()
        ae = AE(ae_title=ae_title)
        ae.network_timeout = 30
        ae.dimse_timeout = 60
        # One context per syntax, so raw sends of Explicit and Implicit VR files both find theirs.
        for sop_class in (CTImageStorage, MRImageStorage, SecondaryCaptureImageStorage):
            for syntax in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
                ae.add_requested_context(sop_class, syntax)
        ae.add_requested_context(StorageCommitmentPushModel)
        ae.add_requested_context(Verification)
        self.assoc = ae.associate(
            "127.0.0.1",
            port,
            ae_title=called,
            evt_handlers=[
                (evt.EVT_CONN_OPEN, _nodelay),
                (evt.EVT_N_EVENT_REPORT, self._on_report),
                (evt.EVT_DIMSE_SENT, self._on_sent),
                (evt.EVT_PDU_SENT, self._on_pdu_sent),
            ],
            tls_args=tls_args,
        )

    def _on_report(self, event: Any) -> tuple[int, None]:
        self._answering.put(Report(event.request.EventTypeID, event.event_information, True))
        return 0x0000, None

    def _on_sent(self, event: Any) -> None:
        if type(event.message).__name__ == "N_EVENT_REPORT_RSP":
            self._answered.put(self._answering.get_nowait())

    def _on_pdu_sent(self, event: Any) -> None:
        # The response is a command set alone: one P-DATA-TF.
        if type(event.pdu).__name__ == "P_DATA_TF" and not self._answered.empty():
            self.reports.put(self._answered.get_nowait())

    def store(self, dataset: Dataset | Path) -> int:
        status = self.assoc.send_c_store(dataset)
        return int(status.Status) if "Status" in status else -1

    def status_dataset(self, dataset: Dataset | Path) -> Dataset:
        return self.assoc.send_c_store(dataset)

    def request_commitment(self, info: Dataset) -> int:
        status, _ = self.assoc.send_n_action(info, 1, StorageCommitmentPushModel, COMMITMENT_INSTANCE)
        return int(status.Status)

    def wait_report(self, timeout: float = 30.0) -> Report:
        return self.reports.get(timeout=timeout)

    def release(self) -> None:
        if self.assoc.is_established:
            self.assoc.release()


class CommitmentReceiver:
    """The requester's own SCP: accepts the archive's new association and its N-EVENT-REPORT
    (answering after ``answer_after`` seconds, to play a slow requester)."""

    def __init__(
        self, ae_title: str, port: int = 0, ssl_context: Any = None, answer_after: float = 0.0
    ) -> None:
        self.answer_after = answer_after
        self.reports: queue.Queue[Report] = queue.Queue()
        self.ae = AE(ae_title=ae_title)
        self.ae.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
        self.ae.add_supported_context(Verification)
        self.server = self.ae.start_server(
            ("127.0.0.1", port),
            block=False,
            evt_handlers=[(evt.EVT_CONN_OPEN, _nodelay), (evt.EVT_N_EVENT_REPORT, self._on_report)],
            ssl_context=ssl_context,
        )
        self.port = int(self.server.server_address[1])

    def _on_report(self, event: Any) -> tuple[int, None]:
        self.reports.put(Report(event.request.EventTypeID, event.event_information, False))
        if self.answer_after:
            time.sleep(self.answer_after)
        return 0x0000, None

    def wait_report(self, timeout: float = 60.0) -> Report:
        return self.reports.get(timeout=timeout)

    def stop(self) -> None:
        self.server.shutdown()


__all__ = ["CommitmentReceiver", "Modality", "Report", "action_information", "build_role"]
