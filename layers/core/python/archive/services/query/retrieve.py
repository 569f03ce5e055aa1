"""C-MOVE and C-GET: which instances an identifier names, and their objects ready to send.

Objects are produced one at a time, in series order: neither the study nor one object is held in
memory. Each stored object is written in the transfer syntax the receiver accepted, carrying the
patient identity the index holds now (attribute coercion; the stored bytes never change). Objects up
to 8 MiB are read from S3 in one GET and prepared in memory as the encoded dataset the sender puts
on the wire as it is: sent as stored, only the elements before group 0011 are parsed and re-encoded
(``transcode.head_edited``), the rest are the stored bytes; larger ones go through ranged reads of
the header and one streamed GET of the rest, straight into a spool file the sender streams
(``archive.dicom.transcode`` explains why memory stays bounded by the header, not the object).
Reads run ahead on a small thread pool, at most ``prefetch`` objects and ``read_ahead_bytes`` bytes
in flight, so throughput is bound by the receiver rather than by one object's first-byte latency.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from archive.data.objects import ObjectStore
from archive.data.query_index import QueryIndex
from archive.dicom.coercion import coerce
from archive.dicom.transcode import (
    choose_syntax,
    dataset_bytes,
    encoded_edit,
    head_edited,
    part10,
    spliced,
    write_for_receiver,
)
from archive.errors import ArchiveError, QueryRefused, StorageFailure
from archive.model.records import InstanceRecord, PatientDemographics, StudyRecord
from archive.services.query.find import QueryRequest, QueryService
from archive.services.query.matching import has_wildcard, is_single_value, uid_list
from archive.services.query.patients import CurrentPatients

READ_CHUNK = 1024 * 1024
# Objects up to this size are read in one GET (at most ``prefetch`` of them in memory at once).
SMALL_OBJECT_BYTES = 8 * 1024 * 1024
# At most this many bytes of objects read ahead per retrieval (or one larger object).
READ_AHEAD_BYTES = 64 * 1024 * 1024
# Reads in flight per retrieval: enough to cover S3's first-byte latency (tens of ms on S3
# Standard) at the receiver's pace of a few hundred objects a second.
PREFETCH = 16
# While the next object is still being read, ``waiting`` is called this often.
WAITING_NOTICE_SECONDS = 5.0
# Objects that must be decoded or byte-swapped are converted in memory up to this size.
CONVERT_IN_MEMORY_BYTES = 512 * 1024 * 1024


@dataclass(frozen=True)
class RetrieveItem:
    """One instance to send: where its bytes are and whose they are now."""

    sop_instance_uid: str
    sop_class_uid: str
    study_uid: str
    transfer_syntax_uid: str
    s3_key: str
    s3_version_id: str | None
    size: int
    patient: PatientDemographics
    controller_oid: str | None
    series_uid: str | None = None
    # In a cold storage class and not restored: not sent; its study's restore is started instead.
    nearline: bool = False


@dataclass
class Prepared:
    """A sub-operation's object as a Part-10 spool file in the syntax to send, or why there is none.

    The consumer sends ``path`` and then calls ``discard()``; the file is the only copy in flight.
    """

    item: RetrieveItem
    path: Path | None
    transfer_syntax_uid: str | None = None
    error: ArchiveError | None = None
    # A small object, ready in memory: its dataset encoded in ``transfer_syntax_uid`` (no file
    # meta), as the DIMSE data set is sent; no spool file.
    encoded: bytes | None = None

    @property
    def sendable(self) -> bool:
        """There is an object to send (a spool file or the encoded dataset)."""
        return self.path is not None or self.encoded is not None

    def part10(self) -> bytes:
        """The in-memory object as a Part-10 file (RAD-69 attachments)."""
        assert self.encoded is not None and self.transfer_syntax_uid is not None
        return part10(
            self.item.sop_class_uid, self.item.sop_instance_uid, self.transfer_syntax_uid, self.encoded
        )

    def discard(self) -> None:
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            self.path = None


class RetrieveService:
    def __init__(
        self,
        index: QueryIndex,
        queries: QueryService,
        objects: ObjectStore,
        *,
        prefetch: int = PREFETCH,
        workers: int = 32,
        read_ahead_bytes: int = READ_AHEAD_BYTES,
        convert_in_memory_bytes: int = CONVERT_IN_MEMORY_BYTES,
        spool_dir: str | None = None,
    ) -> None:
        self._index = index
        self._queries = queries
        self._objects = objects
        # Each retrieval keeps ``prefetch`` reads in flight; the pool is shared by the listener's
        # concurrent associations, so it is sized for several of them.
        self._prefetch = max(1, prefetch)
        self._read_ahead_bytes = read_ahead_bytes
        self._convert_in_memory_bytes = convert_in_memory_bytes
        self._spool_dir = spool_dir
        # Conversions that hold a whole dataset (up to ``convert_in_memory_bytes``) run two at a time.
        self._whole_dataset_conversions = threading.BoundedSemaphore(2)
        self._pool = ThreadPoolExecutor(
            max_workers=max(workers, self._prefetch), thread_name_prefix="retrieve-read"
        )

    # --- which instances -------------------------------------------------------------------

    def plan(self, request: QueryRequest, org_oid: str) -> list[RetrieveItem]:
        """The instances a C-MOVE/C-GET identifier names that ``org_oid`` may retrieve."""
        patients = CurrentPatients(self._index.current_patient_key, self._index.patient)
        if request.level == "IMAGE":
            return self._by_sop_uids(request, org_oid, patients)
        if request.level == "PATIENT":
            studies = self._queries.studies_for(
                QueryRequest(
                    request.root,
                    "STUDY",
                    {
                        "PatientID": request.value("PatientID"),
                        "IssuerOfPatientID": request.value("IssuerOfPatientID"),
                    },
                ),
                org_oid,
            )
        else:
            study_uids = self._unique_key(request, "StudyInstanceUID")
            studies = [s for s in self._index.studies(study_uids) if s.org_oid == org_oid]
        series_uids: list[str | None] = [None]
        if request.level == "SERIES":
            series_uids = list(self._unique_key(request, "SeriesInstanceUID"))
        items = []
        for study in studies:
            patient = patients.for_study(study)
            for series_uid in series_uids:
                for instance in self._index.instances_of_study(study.study_uid, series_uid, to_send=True):
                    items.append(_item(instance, patient, study))
        return items

    def instances_to_send(self, sop_instance_uids: Sequence[str]) -> list[RetrieveItem]:
        """The named instances with their current patient, whatever organisation controls them:
        the caller (RAD-69) applies its own disclosure rules to ``controller_oid``."""
        patients = CurrentPatients(self._index.current_patient_key, self._index.patient)
        instances = self._index.instances(sop_instance_uids)
        studies = {s.study_uid: s for s in self._index.studies({i.study_uid for i in instances})}
        return [
            _item(i, patients.for_study(studies[i.study_uid]), studies[i.study_uid])
            for i in instances
            if i.study_uid in studies
        ]

    def _by_sop_uids(
        self, request: QueryRequest, org_oid: str, patients: CurrentPatients
    ) -> list[RetrieveItem]:
        instances = self._index.instances(self._unique_key(request, "SOPInstanceUID"))
        studies = {s.study_uid: s for s in self._index.studies({i.study_uid for i in instances})}
        items = []
        for instance in instances:
            study = studies.get(instance.study_uid)
            if study is not None and study.org_oid == org_oid:
                items.append(_item(instance, patients.for_study(study), study))
        return items

    @staticmethod
    def _unique_key(request: QueryRequest, keyword: str) -> list[str]:
        value = request.value(keyword)
        if not request.given(keyword) or has_wildcard(value):
            raise QueryRefused(f"{request.level} level retrieve needs {keyword} (a UID or list of UIDs)")
        if keyword != request.level_unique_key() and not is_single_value(value, "UI"):
            raise QueryRefused(f"{keyword} above the retrieve level must be a single UID")
        return uid_list(value)

    # --- objects to send ---------------------------------------------------------------------

    def prepared(
        self,
        items: Sequence[RetrieveItem],
        accepted: Callable[[str, str], bool],
        waiting: Callable[[], None] = lambda: None,
    ) -> Generator[Prepared, None, None]:
        """Objects to send, in order, converted to what the receiver ``accepted(sop_class, ts)``.
        ``waiting`` is called every few seconds while the next object is still being read (the
        listener counts that as activity on its associations, so a slow read of a large object does
        not idle them out).

        Stops reading ahead when the consumer stops iterating (C-CANCEL, released association);
        spool files of objects read ahead but never handed out are removed.
        """
        window: deque[tuple[RetrieveItem, Future[Prepared]]] = deque()
        position = 0
        in_flight = 0
        try:
            while position < len(items) or window:
                while position < len(items) and len(window) < self._prefetch:
                    item = items[position]
                    if window and in_flight + item.size > self._read_ahead_bytes:
                        break
                    window.append((item, self._pool.submit(self._prepare, item, accepted)))
                    in_flight += item.size
                    position += 1
                item, future = window.popleft()
                in_flight -= item.size
                while True:
                    try:
                        ready = future.result(timeout=WAITING_NOTICE_SECONDS)
                        break
                    except TimeoutError:
                        waiting()
                yield ready
        finally:
            for _, future in window:
                if not future.cancel():
                    future.add_done_callback(_discard_result)

    def _prepare(self, item: RetrieveItem, accepted: Callable[[str, str], bool]) -> Prepared:
        try:
            target = choose_syntax(item.transfer_syntax_uid, lambda ts: accepted(item.sop_class_uid, ts))
            try:
                source = StoredObjectSource(self._objects, item, self._spool_path)
            except Exception as exc:  # botocore errors: the sub-operation fails, the others go on
                raise StorageFailure(f"cannot read {item.s3_key}: {type(exc).__name__}") from exc

            def edit(ds: Dataset) -> None:
                coerce(ds, item.patient)

            if not spliced(item.transfer_syntax_uid, target):
                # Decoding, byte-swapping, inflating: the whole dataset in memory, a few at a time.
                with self._whole_dataset_conversions:
                    return self._to_spool_file(item, source, target, edit)
            if source.data is not None and target == item.transfer_syntax_uid:
                encoded = head_edited(
                    source.data,
                    target,
                    lambda charset, implicit: _coerced_elements(item.patient, charset, implicit),
                )
                if encoded is not None:
                    return Prepared(item, None, target, encoded=encoded)
            if source.size <= SMALL_OBJECT_BYTES:
                buffer = io.BytesIO()
                write_for_receiver(
                    source,
                    item.transfer_syntax_uid,
                    target,
                    buffer,
                    edit,
                    memory_limit=self._convert_in_memory_bytes,
                )
                return Prepared(item, None, target, encoded=bytes(dataset_bytes(buffer.getvalue())))
            return self._to_spool_file(item, source, target, edit)
        except ArchiveError as exc:
            return Prepared(item, None, error=exc)
        except Exception as exc:  # a read cut short, a dataset pydicom cannot re-encode
            return Prepared(item, None, error=StorageFailure(f"cannot read or re-encode: {exc}"))

    def _to_spool_file(
        self, item: RetrieveItem, source: StoredObjectSource, target: str, edit: Callable[[Dataset], None]
    ) -> Prepared:
        out = self._spool_path("send")
        try:
            write_for_receiver(
                source,
                item.transfer_syntax_uid,
                target,
                out,
                edit,
                memory_limit=self._convert_in_memory_bytes,
            )
        except BaseException:
            _unlink(out)
            raise
        return Prepared(item, out, target)

    def _spool_path(self, kind: str) -> Path:
        fd, name = tempfile.mkstemp(prefix=f"retrieve-{kind}-", suffix=".dcm", dir=self._spool_dir)
        os.close(fd)
        return Path(name)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class StoredObjectSource:
    """A stored object in S3 as the transcoder's ``Source``: small objects read once into memory,
    large ones as ranged reads (header) and one streamed GET from an offset (the rest)."""

    def __init__(self, objects: ObjectStore, item: RetrieveItem, spool_path: Callable[[str], Path]) -> None:
        self._objects = objects
        self._item = item
        self._spool_path = spool_path
        # The whole stored object, for objects read in one GET.
        self.data: bytes | None = None
        if 0 < item.size <= SMALL_OBJECT_BYTES:
            self.data = bytes(objects.get_stream(item.s3_key, item.s3_version_id).read())
            self.size = len(self.data)
        else:
            self._reader = objects.open(item.s3_key, item.s3_version_id)
            self.size = self._reader.size

    @contextlib.contextmanager
    def header(self) -> Iterator[Any]:
        yield io.BytesIO(self.data) if self.data is not None else self._reader

    @contextlib.contextmanager
    def tail(self, offset: int) -> Iterator[Any]:
        if self.data is not None:
            yield io.BytesIO(memoryview(self.data)[offset:])
            return
        body = self._objects.get_stream(self._item.s3_key, self._item.s3_version_id, start=offset)
        try:
            yield body
        finally:
            body.close()

    @contextlib.contextmanager
    def whole(self) -> Iterator[Path]:
        path = self._spool_path("read")
        try:
            with open(path, "wb") as spool, self.tail(0) as body:
                while chunk := body.read(READ_CHUNK):
                    spool.write(chunk)
            yield path
        finally:
            _unlink(path)


@functools.lru_cache(maxsize=256)
def _coerced_elements(
    patient: PatientDemographics, charset: tuple[str, ...], implicit_vr: bool
) -> dict[int, bytes] | None:
    """The patient's identity attributes, encoded once per patient, character set and syntax:
    the elements every object of a study is sent with."""
    return encoded_edit(lambda ds: coerce(ds, patient), charset, implicit_vr)


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _discard_result(future: Future[Prepared]) -> None:
    if not future.cancelled() and future.exception() is None:
        future.result().discard()


def _item(instance: InstanceRecord, patient: PatientDemographics, study: StudyRecord) -> RetrieveItem:
    return RetrieveItem(
        sop_instance_uid=instance.sop_instance_uid,
        sop_class_uid=instance.sop_class_uid,
        study_uid=instance.study_uid,
        transfer_syntax_uid=instance.transfer_syntax_uid,
        s3_key=instance.s3_key,
        s3_version_id=instance.s3_version_id,
        size=int(instance.size),
        patient=patient,
        controller_oid=study.org_oid,
        series_uid=instance.series_uid,
        nearline=instance.nearline,
    )
