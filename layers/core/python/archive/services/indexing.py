"""Indexing a stored object: read its header from S3 (ranged reads only) and record it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from archive.data.index import IndexRepository
from archive.data.objects import INSTANCE_PREFIX, InstanceMetadata, ObjectStore
from archive.dicom.instance import read_header
from archive.model.identity import PatientIdentity
from archive.model.records import IndexedInstance


@dataclass(frozen=True)
class IndexOutcome:
    key: str
    indexed: bool  # False: not an instance object, or indexed before (a redelivery)
    bytes_read: int = 0
    study_uid: str | None = None
    org_oid: str | None = None


def index_object(
    key: str,
    version_id: str | None,
    objects: ObjectStore,
    index: IndexRepository,
    staging: ObjectStore | None = None,
) -> IndexOutcome:
    """Index the locked object ``key``; then release its staged copy, if there is a staging tier.

    The staged copy goes only once the locked one is in the index, so the listener always finds a
    received UID in one of the two (docs/storage.md, "Two tiers").
    """
    if not key.startswith(INSTANCE_PREFIX):
        return IndexOutcome(key, indexed=False)
    reader = objects.open(key, version_id)
    header = read_header(reader)  # type: ignore[arg-type]  # RangedReader is a RawIOBase
    metadata = InstanceMetadata.from_object_metadata(reader.head.metadata)
    patient = PatientIdentity.from_key(metadata.patient_key)
    item = IndexedInstance(
        sop_instance_uid=header.sop_instance_uid,
        sop_class_uid=header.sop_class_uid,
        study_uid=header.study_uid,
        series_uid=header.series_uid,
        transfer_syntax_uid=metadata.transfer_syntax,
        s3_key=key,
        s3_version_id=reader.head.version_id,
        sha256=reader.head.sha256,
        size=reader.size,
        sending_ae=metadata.sending_ae,
        org_oid=metadata.org_oid,
        patient_key=patient.key,
        patient_id=patient.patient_id,
        issuer=patient.issuer,
        received_at=metadata.received_at or datetime.now(UTC),
        attributes=header.attributes,
    )
    indexed = index.record_instance(item)
    # The listener decides an object's legal hold at its PUT from a cache (HOLDS_TTL_SECONDS): one
    # stored just after a hold was placed may miss it. The hold's count on the study row is
    # authoritative and is raised before the hold's sweep lists the study's instances, so either
    # that sweep finds this (now indexed) object or this read sees the count (docs/retention.md).
    if index.study_held(item.study_uid):
        objects.set_legal_hold(key, reader.head.version_id, on=True)
    if staging is not None:
        staging.delete(key)
    return IndexOutcome(key, indexed, reader.bytes_fetched, item.study_uid, item.org_oid)
