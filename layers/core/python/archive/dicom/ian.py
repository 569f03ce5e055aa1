"""Instance Availability Notification (PS3.3 C.4.23, SOP Class 1.2.840.10008.5.1.4.33): the
N-CREATE attribute list that confirms a study's registration to the customer."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt

from archive.errors import NotificationUndeliverable
from archive.model.registration import AvailabilityNotice

IAN_SOP_CLASS = "1.2.840.10008.5.1.4.33"
# Success, and N-CREATE's warnings (attribute list error, attribute value out of range): the
# notification was taken.
DELIVERED_STATUSES = (0x0000, 0x0107, 0x0116)


def notification_dataset(notice: AvailabilityNotice) -> Dataset:
    """Study Instance UID, Referenced Series Sequence (> Series Instance UID > Referenced SOP
    Sequence with SOP Class/Instance UID, Instance Availability and Retrieve AE Title) and the
    Referenced Performed Procedure Step Sequence (empty when the instances name none)."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    pps_items = []
    for sop_class, sop_instance in notice.performed_procedure_steps:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = sop_instance
        item.PerformedWorkitemCodeSequence = []
        pps_items.append(item)
    ds.ReferencedPerformedProcedureStepSequence = pps_items
    ds.StudyInstanceUID = notice.study_uid
    by_series: dict[str, list[Dataset]] = {}
    for instance in notice.instances:
        item = Dataset()
        item.ReferencedSOPClassUID = instance.sop_class_uid
        item.ReferencedSOPInstanceUID = instance.sop_instance_uid
        item.InstanceAvailability = instance.availability.value
        item.RetrieveAETitle = notice.retrieve_ae_title
        by_series.setdefault(instance.series_uid, []).append(item)
    series_items = []
    for series_uid, items in by_series.items():
        series = Dataset()
        series.SeriesInstanceUID = series_uid
        series.ReferencedSOPSequence = items
        series_items.append(series)
    ds.ReferencedSeriesSequence = series_items
    return ds


def send_notification(
    dataset: Dataset,
    *,
    sop_instance_uid: str,
    host: str,
    port: int,
    called_ae: str,
    calling_ae: str,
    timeout: float,
    association_arguments: Mapping[str, Any] | None = None,
) -> None:
    """N-CREATE the notification at the destination (the archive as IAN SCU).

    ``association_arguments``: TLS for a destination registered with it
    (``archive.dicom.transport.tls_arguments``).

    Raises NotificationUndeliverable when the association is refused or fails, the N-CREATE gets no
    answer within ``timeout`` or a status other than Success (warnings count as delivered).
    """
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = timeout
    ae.dimse_timeout = timeout
    ae.network_timeout = timeout
    ae.connection_timeout = timeout
    ae.add_requested_context(IAN_SOP_CLASS, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    assoc = ae.associate(
        host,
        port,
        ae_title=called_ae,
        evt_handlers=[(evt.EVT_CONN_OPEN, _nodelay)],
        **(association_arguments or {}),
    )
    if not assoc.is_established:
        raise NotificationUndeliverable(f"association to {called_ae} at {host}:{port} refused or failed")
    try:
        status, _ = assoc.send_n_create(dataset, IAN_SOP_CLASS, sop_instance_uid)
        code = getattr(status, "Status", None)
        if code is None:
            raise NotificationUndeliverable(f"no N-CREATE response from {called_ae}")
        if code not in DELIVERED_STATUSES:
            raise NotificationUndeliverable(f"{called_ae} answered N-CREATE with 0x{code:04X}")
    finally:
        if assoc.is_established:
            assoc.release()
        else:
            assoc.abort()


def _nodelay(event: Any) -> None:
    sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
