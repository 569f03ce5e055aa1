"""The immutable object store: DICOM Part-10 files in the S3 archive bucket.

Key scheme (documented in docs/storage.md): ``instances/<h>/<SOP Instance UID>.dcm`` where ``<h>`` is the
first four hex digits of SHA-256(SOP Instance UID). One key per SOP instance makes "the same UID
again" a conditional-write question; the hash prefix spreads load over S3 partitions, since UIDs of
one vendor share long common prefixes.
"""

from __future__ import annotations

import base64
import hashlib
import io
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import IO, Any
from urllib.parse import quote, unquote

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from archive.config import Settings
from archive.errors import RetentionLocked, StorageFailure
from archive.model.retention import ObjectLock

METADATA_SHA256 = "sha256"
CHUNK_BYTES = 1024 * 1024
# Every SOP instance object's key starts so; the bucket notifies the index queue of these only.
INSTANCE_PREFIX = "instances/"


def instance_key(sop_instance_uid: str) -> str:
    prefix = hashlib.sha256(sop_instance_uid.encode("ascii")).hexdigest()[:4]
    return f"{INSTANCE_PREFIX}{prefix}/{sop_instance_uid}.dcm"


@dataclass(frozen=True)
class InstanceMetadata:
    """The user metadata of an instance object: written by the listener with the object, read by
    the index. The one place that spells the S3 metadata keys (docs/storage.md)."""

    patient_key: str
    sending_ae: str | None = None
    org_oid: str | None = None
    received_at: datetime | None = None
    transfer_syntax: str = ""
    sop_class_uid: str | None = None
    study_uid: str | None = None
    series_uid: str | None = None
    # Irregularities of the encoding the listener tolerated (archive.dicom.structure), sorted codes.
    tolerated: tuple[str, ...] = ()

    def as_object_metadata(self) -> dict[str, str]:
        # S3 metadata is ASCII: AE titles and patient keys are percent-encoded.
        values = {
            "sending-ae": quote(self.sending_ae) if self.sending_ae is not None else None,
            "org-oid": self.org_oid,
            "received-at": self.received_at.isoformat(timespec="milliseconds") if self.received_at else None,
            "transfer-syntax": self.transfer_syntax,
            "sop-class-uid": self.sop_class_uid,
            "study-uid": self.study_uid,
            "series-uid": self.series_uid,
            "patient-key": quote(self.patient_key),
            "tolerated": ",".join(self.tolerated) if self.tolerated else None,
        }
        return {k: v for k, v in values.items() if v is not None}

    @classmethod
    def from_object_metadata(cls, metadata: Mapping[str, str]) -> InstanceMetadata:
        received = metadata.get("received-at")
        return cls(
            patient_key=unquote(metadata["patient-key"]),
            sending_ae=unquote(metadata.get("sending-ae", "")) or None,
            org_oid=metadata.get("org-oid"),
            received_at=datetime.fromisoformat(received) if received else None,
            transfer_syntax=metadata.get("transfer-syntax", ""),
            sop_class_uid=metadata.get("sop-class-uid"),
            study_uid=metadata.get("study-uid"),
            series_uid=metadata.get("series-uid"),
            tolerated=tuple(filter(None, metadata.get("tolerated", "").split(","))),
        )


@dataclass(frozen=True)
class StoredObject:
    key: str
    version_id: str | None
    sha256: str  # hex
    size: int
    metadata: Mapping[str, str]


class ObjectExists(Exception):
    """A conditional PUT found the key taken (the caller decides whether that is a duplicate)."""


def sha256_b64(hex_digest: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_digest)).decode("ascii")


def b64_to_hex(b64_digest: str) -> str:
    return base64.b64decode(b64_digest).hex()


class ObjectStore:
    """Data access to the archive bucket; the only module that calls S3."""

    def __init__(self, settings: Settings, client: Any | None = None, *, bucket: str | None = None) -> None:
        self._settings = settings
        self._client = client
        # Another bucket than the archive's: the staging tier (docs/storage.md).
        self._bucket = bucket

    @cached_property
    def client(self) -> Any:
        if self._client is not None:
            return self._client
        return boto3.client(
            "s3",
            region_name=self._settings.region,
            endpoint_url=self._settings.endpoint_url,
            config=Config(retries={"max_attempts": 8, "mode": "adaptive"}, max_pool_connections=32),
        )

    @property
    def bucket(self) -> str:
        return self._bucket or self._settings.bucket

    def put_new(
        self,
        key: str,
        body: IO[bytes],
        *,
        sha256_hex: str,
        size: int,
        metadata: Mapping[str, str],
        lock: ObjectLock | None = None,
        legal_hold: bool = False,
    ) -> StoredObject:
        """Write ``body`` under ``key`` only if the key is free, with S3 verifying SHA-256.

        ``lock`` sets the version's Object Lock retention in the same request (without it the
        bucket's default retention applies). Returns only after S3 acknowledged the write, with
        the checksum S3 computed equal to ours. ``legal_hold`` puts the version under S3's legal
        hold in the same request (a held study). Raises ObjectExists when the key is taken,
        StorageFailure on any other failure.
        """
        digest = sha256_b64(sha256_hex)
        lock_args: dict[str, Any] = {}
        if lock is not None:
            lock_args = {"ObjectLockMode": lock.mode, "ObjectLockRetainUntilDate": lock.retain_until}
        if legal_hold:
            lock_args["ObjectLockLegalHoldStatus"] = "ON"
        try:
            response = self.client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=body,
                ContentLength=size,
                ContentType="application/dicom",
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=digest,
                IfNoneMatch="*",
                Metadata={METADATA_SHA256: sha256_hex, **metadata},
                **lock_args,
            )
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("PreconditionFailed", "ConditionalRequestConflict", "412"):
                raise ObjectExists(key) from exc
            raise StorageFailure(f"S3 PUT {key} failed: {code}") from exc
        if response.get("ChecksumSHA256") != digest:
            raise StorageFailure(f"S3 PUT {key}: checksum not confirmed")
        return StoredObject(key, response.get("VersionId"), sha256_hex, size, dict(metadata))

    def head(self, key: str, version_id: str | None = None) -> StoredObject | None:
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key, "ChecksumMode": "ENABLED"}
        if version_id:
            kwargs["VersionId"] = version_id
        try:
            response = self.client.head_object(**kwargs)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise StorageFailure(f"S3 HEAD {key} failed") from exc
        metadata = response.get("Metadata", {})
        checksum = response.get("ChecksumSHA256")
        sha = b64_to_hex(checksum) if checksum else metadata.get(METADATA_SHA256, "")
        return StoredObject(key, response.get("VersionId"), sha, response["ContentLength"], metadata)

    def retention(self, key: str, version_id: str | None = None) -> ObjectLock | None:
        """The Object Lock retention of a version, as S3 holds it (None when it has none).

        Read from HeadObject's lock headers (real S3 returns them to a caller allowed
        s3:GetObjectRetention; moto 5.2 serves HEAD but not GetObjectRetention).
        """
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if version_id:
            kwargs["VersionId"] = version_id
        try:
            response = self.client.head_object(**kwargs)
        except ClientError as exc:
            raise StorageFailure(f"S3 HEAD {key} failed") from exc
        until = response.get("ObjectLockRetainUntilDate")
        return ObjectLock(response["ObjectLockMode"], until.astimezone(UTC)) if until else None

    def lock_like(self, key: str) -> ObjectLock | None:
        """A lock for an object the archive writes about another one (a study's manifest or
        rejection note): the Object Lock of ``key``'s current version, but at least the minimum
        lock from now (S3 takes no retain-until in the past). None when ``key`` has no lock or is
        not there (the bucket's default then applies)."""
        try:
            lock = self.retention(key)
        except StorageFailure:
            return None
        if lock is None:
            return None
        floor = datetime.now(UTC) + timedelta(seconds=self._settings.minimum_lock_seconds)
        return ObjectLock(lock.mode, max(lock.retain_until, floor))

    def deletable(self, key: str, version_id: str, now: datetime) -> bool:
        """Whether S3 would let this version be deleted now without any bypass: its retain-until
        has passed and no legal hold is on (one HEAD). The destruction job asks before it deletes
        anything of a study, so a refusal leaves the study whole."""
        try:
            response = self.client.head_object(Bucket=self.bucket, Key=key, VersionId=version_id)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound", "405"):
                return True  # a delete marker (no lock), or gone already
            raise StorageFailure(f"S3 HEAD {key} failed") from exc
        until = response.get("ObjectLockRetainUntilDate")
        if until is not None and until.astimezone(UTC) > now:
            return False
        return response.get("ObjectLockLegalHoldStatus") != "ON"

    def extend_retention(self, key: str, version_id: str | None, lock: ObjectLock) -> None:
        """Set a version's retain-until to ``lock`` (the caller lengthens only: S3 refuses to
        shorten a COMPLIANCE lock, and nobody here may bypass a GOVERNANCE one)."""
        kwargs: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": key,
            "Retention": {"Mode": lock.mode, "RetainUntilDate": lock.retain_until},
        }
        if version_id:
            kwargs["VersionId"] = version_id
        try:
            self.client.put_object_retention(**kwargs)
        except ClientError as exc:
            raise StorageFailure(f"S3 PutObjectRetention {key} failed") from exc

    def set_legal_hold(self, key: str, version_id: str | None, *, on: bool) -> None:
        """Turn a version's Object Lock legal hold on or off (no delete of a held version)."""
        kwargs: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": key,
            "LegalHold": {"Status": "ON" if on else "OFF"},
        }
        if version_id:
            kwargs["VersionId"] = version_id
        try:
            self.client.put_object_legal_hold(**kwargs)
        except ClientError as exc:
            raise StorageFailure(f"S3 PutObjectLegalHold {key} failed") from exc

    def legal_hold(self, key: str, version_id: str | None = None) -> bool:
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if version_id:
            kwargs["VersionId"] = version_id
        try:
            # (moto answers a version never held without a Status)
            return bool(self.client.get_object_legal_hold(**kwargs)["LegalHold"].get("Status") == "ON")
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "NoSuchObjectLockConfiguration":
                return False
            raise StorageFailure(f"S3 GetObjectLegalHold {key} failed") from exc

    def versions_of(self, key: str) -> list[str]:
        """Every version (and delete marker) of exactly this key: a listing of one key, never of
        the bucket."""
        found: list[str] = []
        paginator = self.client.get_paginator("list_object_versions")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=key):
            for entry in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
                if entry["Key"] == key:
                    found.append(entry["VersionId"])
        return found

    def instance_uids(self, limit: int) -> set[str] | None:
        """The SOP Instance UIDs of every instance object in the bucket, or None when there are more
        than ``limit``. Only for the staging bucket, which holds just the copies in flight to the
        locked bucket (each is deleted once indexed), never for the archive bucket."""
        found: set[str] = set()
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=INSTANCE_PREFIX):
                for entry in page.get("Contents", []):
                    found.add(entry["Key"].rsplit("/", 1)[-1].removesuffix(".dcm"))
                if len(found) > limit:
                    return None
        except ClientError as exc:
            raise StorageFailure(f"S3 LIST {self.bucket} failed") from exc
        return found

    def delete_version(self, key: str, version_id: str) -> None:
        """Permanently delete one version; S3 refuses while its lock or legal hold holds it
        (RetentionLocked). Never bypasses governance retention."""
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key, VersionId=version_id)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("AccessDenied", "InvalidRequest"):
                raise RetentionLocked(f"S3 refused to delete {key} version {version_id}") from exc
            raise StorageFailure(f"S3 DeleteObject {key} failed") from exc

    def fetch_to(self, key: str, fp: IO[bytes]) -> StoredObject | None:
        """Copy the object's bytes into ``fp`` (None when there is no such key), with its metadata
        and the SHA-256 S3 holds for it."""
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=key, ChecksumMode="ENABLED")
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise StorageFailure(f"S3 GET {key} failed") from exc
        body = response["Body"]
        while chunk := body.read(CHUNK_BYTES):
            fp.write(chunk)
        metadata = response.get("Metadata", {})
        checksum = response.get("ChecksumSHA256")
        sha = b64_to_hex(checksum) if checksum else metadata.get(METADATA_SHA256, "")
        return StoredObject(key, response.get("VersionId"), sha, response["ContentLength"], metadata)

    def delete(self, key: str) -> None:
        """Remove the key (the staging tier: unversioned, unlocked); a missing key is no error."""
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            raise StorageFailure(f"S3 DeleteObject {key} failed") from exc

    def restore(self, key: str, version_id: str | None, *, days: int, tier: str) -> bool:
        """Ask S3 for a readable copy of an archived version (RestoreObject) for ``days``.

        True when this call started a restore; False when one is under way or done already, or
        the version needs none (S3's 409 RestoreAlreadyInProgress, or InvalidObjectState for a
        class that is read directly): asking again is harmless, so the restore job is idempotent.
        """
        kwargs: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": key,
            "RestoreRequest": {"Days": days, "GlacierJobParameters": {"Tier": tier}},
        }
        if version_id:
            kwargs["VersionId"] = version_id
        try:
            response = self.client.restore_object(**kwargs)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in (
                "RestoreAlreadyInProgress",
                "InvalidObjectState",
            ):
                return False
            raise StorageFailure(f"S3 RestoreObject {key} failed") from exc
        # 202 Accepted: started; 200 OK: a restored copy exists already (its expiry was extended).
        return int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 202)) == 202

    def storage_state(self, key: str, version_id: str | None = None) -> tuple[str, str | None]:
        """A version's storage class and S3's ``x-amz-restore`` header (HeadObject)."""
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if version_id:
            kwargs["VersionId"] = version_id
        try:
            response = self.client.head_object(**kwargs)
        except ClientError as exc:
            raise StorageFailure(f"S3 HEAD {key} failed") from exc
        return str(response.get("StorageClass") or "STANDARD"), response.get("Restore")

    def open(self, key: str, version_id: str | None = None, block_size: int = 64 * 1024) -> RangedReader:
        """A seekable reader that fetches only the byte ranges actually read."""
        return RangedReader(self, key, version_id, block_size)

    def get_range(self, key: str, version_id: str | None, start: int, end: int) -> bytes:
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key, "Range": f"bytes={start}-{end}"}
        if version_id:
            kwargs["VersionId"] = version_id
        return bytes(self.client.get_object(**kwargs)["Body"].read())

    def get_stream(self, key: str, version_id: str | None = None, start: int = 0) -> Any:
        """The object's bytes from ``start`` on, as a stream read in whatever chunks the caller asks."""
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if version_id:
            kwargs["VersionId"] = version_id
        if start:
            kwargs["Range"] = f"bytes={start}-"
        return self.client.get_object(**kwargs)["Body"]


class RangedReader(io.RawIOBase):
    """File-like view of an S3 object that issues ranged GETs on demand.

    pydicom reads a header element by element and seeks past large values (``defer_size``), so the
    index reads a few tens of kilobytes of a multi-megabyte image instead of the whole object.
    At most ``MAX_BLOCKS`` blocks are kept (least recently used go first): memory stays bounded
    whatever is read through it.
    """

    MAX_BLOCKS = 64

    def __init__(self, store: ObjectStore, key: str, version_id: str | None, block_size: int) -> None:
        head = store.head(key, version_id)
        if head is None:
            raise FileNotFoundError(key)
        self.size = head.size
        self.head = head
        self._store = store
        self._key = key
        self._version_id = head.version_id or version_id
        self._block_size = block_size
        self._pos = 0
        self._blocks: OrderedDict[int, bytes] = OrderedDict()
        self.bytes_fetched = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            self._pos = offset
        elif whence == io.SEEK_CUR:
            self._pos += offset
        else:
            self._pos = self.size + offset
        return self._pos

    def _block(self, index: int) -> bytes:
        if index in self._blocks:
            self._blocks.move_to_end(index)
            return self._blocks[index]
        start = index * self._block_size
        end = min(start + self._block_size, self.size) - 1
        data = self._store.get_range(self._key, self._version_id, start, end)
        self.bytes_fetched += len(data)
        self._blocks[index] = data
        while len(self._blocks) > self.MAX_BLOCKS:
            self._blocks.popitem(last=False)
        return data

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        wanted = min(len(view), max(0, self.size - self._pos))
        done = 0
        while done < wanted:
            index, offset = divmod(self._pos, self._block_size)
            chunk = self._block(index)[offset : offset + wanted - done]
            view[done : done + len(chunk)] = chunk
            done += len(chunk)
            self._pos += len(chunk)
        return done

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = self.size - self._pos
        buffer = bytearray(max(0, min(size, self.size - self._pos)))
        n = self.readinto(buffer)
        return bytes(buffer[:n])


def sop_instance_uid_of(key: str) -> str | None:
    """The SOP Instance UID an instance object's key names (None for any other object)."""
    if not key.startswith(INSTANCE_PREFIX) or not key.endswith(".dcm"):
        return None
    return key.rsplit("/", 1)[-1][: -len(".dcm")] or None


def manifest_key(sop_instance_uid: str) -> str:
    """Manifests (XDS-I.b KOS) live beside the instances, outside ``instances/``: the bucket's
    notification indexes only ``instances/``, so a manifest never becomes part of its own study."""
    prefix = hashlib.sha256(sop_instance_uid.encode("ascii")).hexdigest()[:4]
    return f"manifests/{prefix}/{sop_instance_uid}.dcm"
