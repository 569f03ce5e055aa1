"""Typed configuration, built once from the environment at cold start and passed down.

Nothing below this module reads ``os.environ``. The same variables are set by CDK on AWS and by
the local cloud runner on a laptop; only the endpoint differs (``AWS_ENDPOINT_URL`` is unset on AWS).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from archive import topology as t
from archive.topology import TABLE_ENV


@dataclass(frozen=True)
class Settings:
    """Everything the archive's code needs to know about where it runs."""

    region: str
    bucket: str
    tables: Mapping[str, str]
    endpoint_url: str | None = None
    archive_ae_title: str = "ARCHIVE"
    # Storage commitment: how long to wait for instances to be indexed before reporting failures,
    # and how a report to a requester whose association is gone is retried.
    commitment_wait_seconds: float = 60.0
    commitment_retry_base_seconds: float = 5.0
    commitment_max_attempts: int = 8
    # Bound of each network wait of a report delivery (connect, associate, N-EVENT-REPORT, release);
    # a worker's lease on a transaction is derived from it so a lease always outlives an attempt.
    commitment_delivery_timeout_seconds: float = 30.0
    # Largest single object accepted over C-STORE (S3 single PUT limit is 5 GiB).
    max_object_bytes: int = 4 * 1024**3
    # Where the listener spools incoming datasets before upload (never the final store).
    spool_dir: str = "/tmp"
    index_queue_url: str | None = None
    # The low-latency landing tier and the queue of staged instances to copy into the Object-Locked
    # bucket (docs/storage.md). Without them the listener writes straight to ``bucket``.
    staging_bucket: str | None = None
    lock_queue_url: str | None = None
    # CloudWatch namespace of the metrics the archive emits (powertools' variable; CDK sets it).
    metrics_namespace: str = "ImagingArchive"
    # Object Lock set on each PUT (docs/retention.md): COMPLIANCE in production; the shortest lock
    # an object gets even when its retention has ended already (an old study stored late).
    object_lock_mode: str = "COMPLIANCE"
    minimum_lock_seconds: float = 86400.0
    # Destruction: a destroyed study's XDS registry entries are Deprecated at once and removed
    # this long after (docs/retention.md), so consumers holding their IDs learn first.
    registry_removal_seconds: float = 30 * 86400.0
    # Registration of committed studies (XDS-I.b) and its confirmation (IAN); see docs/registration.md.
    registration_queue_url: str | None = None
    ian_queue_url: str | None = None
    # IAN delivery: the n-th failed attempt is retried after base x 2^(n-1) s; after max_attempts
    # the notification is FAILED and its message goes to the dead-letter queue (maxReceiveCount).
    ian_retry_base_seconds: float = 30.0
    ian_max_attempts: int = 10
    ian_timeout_seconds: float = 30.0
    # Storage tiers: S3 storage-class/restore events in, study restore jobs out; a restore's
    # retrieval tier (Bulk: cheapest, Standard: faster) and how many days the copy stays.
    storage_events_queue_url: str | None = None
    restore_queue_url: str | None = None
    retention_queue_url: str | None = None
    # The most object versions one retention job message handles before it queues the next page.
    retention_page_objects: int = 200
    restore_tier: str = "Bulk"
    restore_days: int = 7
    # ITI-18: a LeafClass answer over this many objects is refused with XDSTooManyResults
    # (ObjectRef answers are not limited); see docs/conformance-xds.md.
    xds_max_leaf_class: int = 1000
    # Security (docs/security.md): the Object-Locked audit bucket (audit trail and disclosure-log
    # anchors), the Secrets Manager secret with the TLS material, where audit messages also go.
    audit_bucket: str | None = None
    audit_source_id: str = "ARCHIVE"
    audit_site_id: str | None = None
    audit_flush_seconds: float = 5.0
    audit_syslog_host: str | None = None
    audit_syslog_port: int = 6514
    tls_secret_id: str | None = None
    tls_check_seconds: float = 300.0
    # The anchoring job writes the heads of chains that grew within this window.
    anchor_lookback_hours: float = 3.0
    extra: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        missing = [v for v in (t.ENV_BUCKET, *TABLE_ENV.values()) if not env.get(v)]
        if missing:
            raise RuntimeError(f"missing configuration: {', '.join(missing)}")
        return cls(
            region=env.get(t.ENV_REGION) or env.get(t.ENV_DEFAULT_REGION) or "eu-north-1",
            bucket=env[t.ENV_BUCKET],
            tables={name: env[var] for name, var in TABLE_ENV.items()},
            endpoint_url=env.get(t.ENV_ENDPOINT_URL) or None,
            archive_ae_title=env.get(t.ENV_AE_TITLE, "ARCHIVE"),
            commitment_wait_seconds=float(env.get(t.ENV_COMMITMENT_WAIT, "60")),
            commitment_retry_base_seconds=float(env.get(t.ENV_COMMITMENT_RETRY_BASE, "5")),
            commitment_max_attempts=int(env.get(t.ENV_COMMITMENT_MAX_ATTEMPTS, "8")),
            max_object_bytes=int(env.get(t.ENV_MAX_OBJECT_BYTES, str(4 * 1024**3))),
            spool_dir=env.get(t.ENV_SPOOL_DIR, "/tmp"),
            index_queue_url=env.get(t.ENV_INDEX_QUEUE_URL) or None,
            staging_bucket=env.get(t.ENV_STAGING_BUCKET) or None,
            lock_queue_url=env.get(t.ENV_LOCK_QUEUE_URL) or None,
            commitment_delivery_timeout_seconds=float(env.get(t.ENV_COMMITMENT_DELIVERY_TIMEOUT, "30")),
            metrics_namespace=env.get(t.ENV_METRICS_NAMESPACE) or "ImagingArchive",
            object_lock_mode=env.get(t.ENV_OBJECT_LOCK_MODE, "COMPLIANCE"),
            minimum_lock_seconds=float(env.get(t.ENV_MINIMUM_LOCK_SECONDS, "86400")),
            registry_removal_seconds=float(env.get(t.ENV_REGISTRY_REMOVAL_SECONDS, str(30 * 86400))),
            registration_queue_url=env.get(t.ENV_REGISTRATION_QUEUE_URL) or None,
            ian_queue_url=env.get(t.ENV_IAN_QUEUE_URL) or None,
            ian_retry_base_seconds=float(env.get(t.ENV_IAN_RETRY_BASE, "30")),
            ian_max_attempts=int(env.get(t.ENV_IAN_MAX_ATTEMPTS, "10")),
            ian_timeout_seconds=float(env.get(t.ENV_IAN_TIMEOUT, "30")),
            storage_events_queue_url=env.get(t.ENV_STORAGE_EVENTS_QUEUE_URL) or None,
            restore_queue_url=env.get(t.ENV_RESTORE_QUEUE_URL) or None,
            retention_queue_url=env.get(t.ENV_RETENTION_QUEUE_URL) or None,
            retention_page_objects=int(env.get(t.ENV_RETENTION_PAGE_OBJECTS, "200")),
            restore_tier=env.get(t.ENV_RESTORE_TIER) or "Bulk",
            restore_days=int(env.get(t.ENV_RESTORE_DAYS, "7")),
            xds_max_leaf_class=int(env.get(t.ENV_XDS_MAX_LEAF_CLASS, "1000")),
            audit_bucket=env.get(t.ENV_AUDIT_BUCKET) or None,
            audit_source_id=env.get(t.ENV_AUDIT_SOURCE_ID) or env.get(t.ENV_AE_TITLE, "ARCHIVE"),
            audit_site_id=env.get(t.ENV_AUDIT_SITE_ID) or None,
            audit_flush_seconds=float(env.get(t.ENV_AUDIT_FLUSH_SECONDS, "5")),
            audit_syslog_host=env.get(t.ENV_AUDIT_SYSLOG_HOST) or None,
            audit_syslog_port=int(env.get(t.ENV_AUDIT_SYSLOG_PORT, "6514")),
            tls_secret_id=env.get(t.ENV_TLS_SECRET_ID) or None,
            tls_check_seconds=float(env.get(t.ENV_TLS_CHECK_SECONDS, "300")),
            anchor_lookback_hours=float(env.get(t.ENV_ANCHOR_LOOKBACK_HOURS, "3")),
        )

    def as_env(self) -> dict[str, str]:
        """The environment that reproduces these settings (used by the local runner)."""
        env = {
            t.ENV_REGION: self.region,
            t.ENV_BUCKET: self.bucket,
            t.ENV_AE_TITLE: self.archive_ae_title,
            t.ENV_COMMITMENT_WAIT: str(self.commitment_wait_seconds),
            t.ENV_COMMITMENT_RETRY_BASE: str(self.commitment_retry_base_seconds),
            t.ENV_COMMITMENT_MAX_ATTEMPTS: str(self.commitment_max_attempts),
            t.ENV_MAX_OBJECT_BYTES: str(self.max_object_bytes),
            t.ENV_SPOOL_DIR: self.spool_dir,
            t.ENV_COMMITMENT_DELIVERY_TIMEOUT: str(self.commitment_delivery_timeout_seconds),
            t.ENV_METRICS_NAMESPACE: self.metrics_namespace,
            t.ENV_OBJECT_LOCK_MODE: self.object_lock_mode,
            t.ENV_MINIMUM_LOCK_SECONDS: str(self.minimum_lock_seconds),
            t.ENV_REGISTRY_REMOVAL_SECONDS: str(self.registry_removal_seconds),
            t.ENV_IAN_RETRY_BASE: str(self.ian_retry_base_seconds),
            t.ENV_IAN_MAX_ATTEMPTS: str(self.ian_max_attempts),
            t.ENV_IAN_TIMEOUT: str(self.ian_timeout_seconds),
            t.ENV_XDS_MAX_LEAF_CLASS: str(self.xds_max_leaf_class),
        }
        env.update({TABLE_ENV[name]: table for name, table in self.tables.items()})
        if self.endpoint_url:
            env[t.ENV_ENDPOINT_URL] = self.endpoint_url
        if self.index_queue_url:
            env[t.ENV_INDEX_QUEUE_URL] = self.index_queue_url
        if self.staging_bucket:
            env[t.ENV_STAGING_BUCKET] = self.staging_bucket
        if self.lock_queue_url:
            env[t.ENV_LOCK_QUEUE_URL] = self.lock_queue_url
        if self.registration_queue_url:
            env[t.ENV_REGISTRATION_QUEUE_URL] = self.registration_queue_url
        if self.ian_queue_url:
            env[t.ENV_IAN_QUEUE_URL] = self.ian_queue_url
        if self.storage_events_queue_url:
            env[t.ENV_STORAGE_EVENTS_QUEUE_URL] = self.storage_events_queue_url
        if self.restore_queue_url:
            env[t.ENV_RESTORE_QUEUE_URL] = self.restore_queue_url
        if self.retention_queue_url:
            env[t.ENV_RETENTION_QUEUE_URL] = self.retention_queue_url
        env[t.ENV_RETENTION_PAGE_OBJECTS] = str(self.retention_page_objects)
        env[t.ENV_RESTORE_TIER] = self.restore_tier
        env[t.ENV_RESTORE_DAYS] = str(self.restore_days)
        env[t.ENV_AUDIT_SOURCE_ID] = self.audit_source_id
        env[t.ENV_AUDIT_FLUSH_SECONDS] = str(self.audit_flush_seconds)
        env[t.ENV_AUDIT_SYSLOG_PORT] = str(self.audit_syslog_port)
        env[t.ENV_TLS_CHECK_SECONDS] = str(self.tls_check_seconds)
        env[t.ENV_ANCHOR_LOOKBACK_HOURS] = str(self.anchor_lookback_hours)
        optional = {
            t.ENV_AUDIT_BUCKET: self.audit_bucket,
            t.ENV_AUDIT_SITE_ID: self.audit_site_id,
            t.ENV_AUDIT_SYSLOG_HOST: self.audit_syslog_host,
            t.ENV_TLS_SECRET_ID: self.tls_secret_id,
        }
        env.update({name: value for name, value in optional.items() if value})
        return env
