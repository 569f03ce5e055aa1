"""Composition root of the DICOM listener: builds it and its commitment worker from Settings."""

from __future__ import annotations

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

from .commitment_worker import CommitmentWorker
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
    commitments = CommitmentRepository()
    query_index = QueryIndex(index)
    queries = QueryService(query_index, settings.archive_ae_title)
    query_retrieve = QueryRetrieveSCP(
        registry,
        queries,
        RetrieveService(query_index, queries, objects, spool_dir=settings.spool_dir),
        AccessLog(),
        on_conn_open=set_nodelay,
    )
    deps = ListenerDeps(
        registry=registry,
        store=StoreService(objects, index, max_object_bytes=settings.max_object_bytes),
        commitments=commitments,
        commitment_wait_seconds=settings.commitment_wait_seconds,
        archive_ae_title=settings.archive_ae_title,
        query_retrieve=query_retrieve,
    )
    listener = DicomListener(deps, host=host, port=port, spool_dir=settings.spool_dir)
    worker = CommitmentWorker(
        repository=commitments,
        index=index,
        objects=objects,
        registry=registry,
        live=listener.live,
        archive_ae_title=settings.archive_ae_title,
        retry_base_seconds=settings.commitment_retry_base_seconds,
        max_attempts=settings.commitment_max_attempts,
        on_all_committed=(
            RegistrationRequests.from_settings(settings).instances_committed
            if settings.registration_queue_url
            else None
        ),
    )
    return DicomService(listener, worker)
