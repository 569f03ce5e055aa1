"""Composition root of the DICOM listener: builds it and its commitment worker from Settings."""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from typing import Any

from archive.config import Settings
from archive.data.access_log import AccessLog
from archive.data.commitments import CommitmentRepository
from archive.data.index import IndexRepository
from archive.data.models import bind_models, connect
from archive.data.objects import ObjectStore
from archive.data.query_index import QueryIndex
from archive.data.queues import LockQueue
from archive.data.registry import Registry
from archive.data.rejections import RejectionRepository
from archive.data.secrets import SecretTlsMaterial
from archive.dicom.transport import tls_arguments
from archive.model.organisations import AEInfo
from archive.services.audit import AuditTrail, build_audit_trail
from archive.services.connection_security import PeerAuthenticator
from archive.services.corrections import CorrectionService
from archive.services.directory import CachedRegistry
from archive.services.ingest import StagingTier, StoreService
from archive.services.query.find import QueryService
from archive.services.query.retrieve import RetrieveService
from archive.services.registration import RegistrationRequests
from archive.services.retention import RetentionService
from archive.services.storage_tiers import StorageTiers
from archive.tls.rotation import RotatingTls

from .audit import DicomAudit
from .commitment_worker import CommitmentWorker, emit_undeliverable_metric
from .query_retrieve import QueryRetrieveSCP
from .server import DicomListener, ListenerDeps, set_nodelay


@dataclass
class DicomService:
    listener: DicomListener
    worker: CommitmentWorker
    audit_trail: AuditTrail

    def start(self) -> None:
        self.listener.start()
        self.worker.start()

    def stop(self) -> None:
        self.listener.stop()
        self.worker.stop()
        self.audit_trail.close()


def tls_material(settings: Settings) -> RotatingTls | None:
    """The archive's certificate, key and the customers' CAs, reloaded when the secret rotates."""
    if not settings.tls_secret_id:
        return None
    return RotatingTls(
        SecretTlsMaterial(settings, settings.tls_secret_id), check_seconds=settings.tls_check_seconds
    )


def build(
    settings: Settings, *, host: str = "0.0.0.0", port: int | None = 11112, tls_port: int | None = None
) -> DicomService:
    bind_models(settings)
    connect()  # the store path's DynamoDB clients, before the first association
    objects = ObjectStore(settings)
    objects.client  # noqa: B018 - built now, for the same reason
    index = IndexRepository(settings)
    registry = CachedRegistry(Registry())
    commitments = CommitmentRepository(settings)
    # Identifies this task as the origin of the commitments it receives (and as a lease owner).
    task_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    query_index = QueryIndex(index)
    queries = QueryService(query_index, settings.archive_ae_title)
    tls = tls_material(settings)
    trail = build_audit_trail(settings, client_context=tls.client if tls else None)
    dicom_audit = DicomAudit(trail, settings.archive_ae_title)

    # The low-latency landing tier (docs/storage.md, "Two tiers"), when the deployment has one.
    staging = (
        # One S3 client for both buckets: a client is costly to build and thread-safe to share.
        StagingTier(
            ObjectStore(settings, objects.client, bucket=settings.staging_bucket), LockQueue(settings)
        )
        if settings.staging_bucket
        else None
    )

    def destination_arguments(destination: AEInfo) -> dict[str, Any]:
        return tls_arguments(destination, registry.organisation(destination.org_oid), tls)

    query_retrieve = QueryRetrieveSCP(
        registry,
        queries,
        RetrieveService(query_index, queries, objects, spool_dir=settings.spool_dir),
        AccessLog(),
        on_conn_open=set_nodelay,
        audit=dicom_audit,
        destination_arguments=destination_arguments,
        restores=StorageTiers.from_settings(settings, objects) if settings.restore_queue_url else None,
    )
    registration = RegistrationRequests.from_settings(settings) if settings.registration_queue_url else None
    retention = RetentionService.configured(settings, objects)
    deps = ListenerDeps(
        registry=registry,
        store=StoreService(
            objects,
            index,
            max_object_bytes=settings.max_object_bytes,
            corrections=CorrectionService(
                RejectionRepository(settings),
                index,
                objects,
                on_study_changed=registration.study_changed if registration else None,
                retention=retention,
                audit_trail=trail,
            ),
            retention=retention,
            staging=staging,
        ),
        commitments=commitments,
        commitment_wait_seconds=settings.commitment_wait_seconds,
        archive_ae_title=settings.archive_ae_title,
        task_id=task_id,
        query_retrieve=query_retrieve,
        tls=tls,
        authenticator=PeerAuthenticator(registry, trail, local_node=settings.archive_ae_title),
        audit=dicom_audit,
    )
    listener = DicomListener(deps, host=host, port=port, spool_dir=settings.spool_dir, tls_port=tls_port)
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
        tls=tls,
        on_all_committed=registration.instances_committed if registration else None,
        staging=staging.objects if staging is not None else None,
        staged_grace_seconds=settings.commitment_wait_seconds,
    )
    return DicomService(listener, worker, trail)
