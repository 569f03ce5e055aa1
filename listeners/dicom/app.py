"""Composition root of the DICOM listener: builds it and its commitment worker from Settings."""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass

from archive.config import Settings
from archive.data.access_log import AccessLog
from archive.data.commitments import CommitmentRepository
from archive.data.index import IndexRepository
from archive.data.models import bind_models
from archive.data.objects import ObjectStore
from archive.data.query_index import QueryIndex
from archive.data.registry import Registry
from archive.services.directory import CachedRegistry
from archive.services.ingest import StoreService
from archive.services.query.find import QueryService
from archive.services.query.retrieve import RetrieveService
from archive.services.registration import RegistrationRequests

from .commitment_worker import CommitmentWorker, emit_undeliverable_metric
from .query_retrieve import QueryRetrieveSCP
from .server import DicomListener, ListenerDeps, set_nodelay


@dataclass
class DicomService:
    listener: DicomListener
    worker: CommitmentWorker

    def start(self) -> None:
        self.listener.start()
        self.worker.start()

    def stop(self) -> None:
        self.listener.stop()
        self.worker.stop()


def build(settings: Settings, *, host: str = "0.0.0.0", port: int = 11112) -> DicomService:
    bind_models(settings)
    objects = ObjectStore(settings)
    index = IndexRepository(settings)
    registry = CachedRegistry(Registry())
    commitments = CommitmentRepository(settings)
    # Identifies this task as the origin of the commitments it receives (and as a lease owner).
    task_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    query_index = QueryIndex(index)
    queries = QueryService(query_index, settings.archive_ae_title)
    query_retrieve = QueryRetrieveSCP(
        registry,
        queries,
        RetrieveService(query_index, queries, objects),
        AccessLog(),
        on_conn_open=set_nodelay,
    )
    deps = ListenerDeps(
        registry=registry,
        store=StoreService(objects, index, max_object_bytes=settings.max_object_bytes),
        commitments=commitments,
        commitment_wait_seconds=settings.commitment_wait_seconds,
        archive_ae_title=settings.archive_ae_title,
        task_id=task_id,
        query_retrieve=query_retrieve,
    )
    listener = DicomListener(deps, host=host, port=port, spool_dir=settings.spool_dir)
    # A report on the requester's own association waits at most this long for its response.
    same_association_timeout = listener.ae.dimse_timeout
    assert same_association_timeout is not None, "commitment leases need every delivery wait bounded"
    worker = CommitmentWorker(
        repository=commitments,
        index=index,
        objects=objects,
        registry=registry,
        live=listener.live,
        archive_ae_title=settings.archive_ae_title,
        owner=task_id,
        retry_base_seconds=settings.commitment_retry_base_seconds,
        max_attempts=settings.commitment_max_attempts,
        delivery_timeout=settings.commitment_delivery_timeout_seconds,
        same_association_timeout=same_association_timeout,
        on_undeliverable=lambda transaction: emit_undeliverable_metric(
            settings.metrics_namespace, transaction
        ),
        on_all_committed=(
            RegistrationRequests.from_settings(settings).instances_committed
            if settings.registration_queue_url
            else None
        ),
    )
    return DicomService(listener, worker)
