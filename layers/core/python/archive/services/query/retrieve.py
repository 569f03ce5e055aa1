"""C-MOVE and C-GET: which instances an identifier names, and their datasets ready to send.

Datasets are produced one at a time, in series order: the study is never held in memory. S3 reads
run ahead on a small thread pool (``prefetch`` objects in flight), so throughput is bound by the
receiver and the network rather than by one object's first-byte latency. Each dataset carries the
patient identity the index holds now (attribute coercion); the stored bytes never change.
"""

from __future__ import annotations

import tempfile
import warnings
from collections import deque
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from archive.data.objects import ObjectStore
from archive.data.query_index import QueryIndex
from archive.dicom.coercion import coerce
from archive.dicom.transcode import choose_syntax, convert
from archive.errors import ArchiveError, QueryRefused, StorageFailure
from archive.model.records import InstanceRecord, PatientDemographics, StudyRecord
from archive.services.query.find import QueryRequest, QueryService
from archive.services.query.matching import has_wildcard, is_single_value, uid_list
from archive.services.query.patients import CurrentPatients

SPOOL_IN_MEMORY_BYTES = 8 * 1024 * 1024
READ_CHUNK = 1024 * 1024


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


@dataclass
class Prepared:
    """A sub-operation's dataset, or why there is none."""

    item: RetrieveItem
    dataset: Dataset | None
    transfer_syntax_uid: str | None = None
    error: ArchiveError | None = None


class RetrieveService:
    def __init__(
        self,
        index: QueryIndex,
        queries: QueryService,
        objects: ObjectStore,
        *,
        prefetch: int = 4,
        workers: int = 16,
    ) -> None:
        self._index = index
        self._queries = queries
        self._objects = objects
        # Each retrieval keeps ``prefetch`` reads in flight; the pool is shared by the listener's
        # concurrent associations, so it is sized for several of them.
        self._prefetch = max(1, prefetch)
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
                for instance in self._index.instances_of_study(study.study_uid, series_uid):
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

    # --- datasets --------------------------------------------------------------------------

    def prepared(
        self,
        items: Sequence[RetrieveItem],
        accepted: Callable[[str, str], bool],
    ) -> Generator[Prepared, None, None]:
        """Datasets to send, in order, converted to what the receiver ``accepted(sop_class, ts)``.

        Stops reading ahead when the consumer stops iterating (C-CANCEL, released association).
        """
        window: deque[tuple[RetrieveItem, Future[Dataset]]] = deque()
        position = 0
        try:
            while position < len(items) or window:
                while position < len(items) and len(window) < self._prefetch:
                    item = items[position]
                    window.append((item, self._pool.submit(self._read, item)))
                    position += 1
                item, future = window.popleft()
                yield self._prepare(item, future, accepted)
        finally:
            for _, future in window:
                future.cancel()

    def _prepare(
        self, item: RetrieveItem, future: Future[Dataset], accepted: Callable[[str, str], bool]
    ) -> Prepared:
        try:
            target = choose_syntax(item.transfer_syntax_uid, lambda ts: accepted(item.sop_class_uid, ts))
            ds = convert(future.result(), item.transfer_syntax_uid, target)
            return Prepared(item, coerce(ds, item.patient), target)
        except ArchiveError as exc:
            return Prepared(item, None, error=exc)

    def _read(self, item: RetrieveItem) -> Dataset:
        """Read one object (spooled to disk beyond a few MB) and parse it."""
        try:
            body = self._objects.get_stream(item.s3_key, item.s3_version_id)
            with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY_BYTES) as spool:
                while chunk := body.read(READ_CHUNK):
                    spool.write(chunk)
                spool.seek(0)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    return pydicom.dcmread(spool)
        except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
            raise StorageFailure(f"cannot read {item.s3_key}: {exc}") from exc
        except Exception as exc:  # botocore errors: the sub-operation fails, the others go on
            raise StorageFailure(f"cannot read {item.s3_key}: {type(exc).__name__}") from exc

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


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
    )
