"""Read access to the index for C-FIND, C-MOVE and C-GET: only key and index lookups, never a scan.

Each method is one GetItem, BatchGetItem or Query on a table key or GSI; the callers (the query
planner and the retrieval) decide which one a request can use and refuse requests that fit none.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any

from pynamodb.attributes import Attribute
from pynamodb.exceptions import DoesNotExist
from pynamodb.expressions.condition import Condition

from archive.data.index import MAX_MERGE_CHAIN, IndexRepository, instance_record, org_modality, study_record
from archive.data.models import Instance, Patient, Series, Study
from archive.model.records import InstanceRecord, PatientRecord, SeriesRecord, StudyRecord

# BatchGetItem takes at most 100 keys.
BATCH = 100
# What C-MOVE/C-GET read of each instance to send it (``instance_record`` leaves the rest empty).
RETRIEVE_ATTRIBUTES = (
    "sop_instance_uid",
    "sop_class_uid",
    "study_uid",
    "series_uid",
    "transfer_syntax_uid",
    "s3_key",
    "s3_version_id",
    "sha256",
    "size",
    "availability",
)


def _first_sightings(values: Iterable[str]) -> Iterator[str]:
    seen: set[str] = set()
    for value in values:
        if value not in seen:
            seen.add(value)
            yield value


def _date_condition(attribute: Attribute[Any], low: str | None, high: str | None) -> Condition | None:
    """A range-key condition for a StudyDate range (None bound = open)."""
    if low and high:
        return attribute.between(low, high)
    if low:
        return attribute >= low
    if high:
        return attribute <= high
    return None


class QueryIndex:
    def __init__(self, index: IndexRepository) -> None:
        self._index = index

    # --- patients --------------------------------------------------------------------------

    def patients_by_id(self, patient_id: str) -> list[PatientRecord]:
        """Every identity with this Patient ID, whatever its issuer (GSI by_patient_id)."""
        return [_patient(p) for p in Patient.by_patient_id.query(patient_id)]

    def patient(self, patient_key: str) -> PatientRecord | None:
        try:
            return _patient(Patient.get(patient_key))
        except DoesNotExist:
            return None

    def current_patient_key(self, patient_key: str) -> str:
        """The surviving identity after merges (HL7 A40), as the index holds it now."""
        return self._index.resolve_patient(patient_key)

    def identities_of(self, survivor_key: str) -> list[str]:
        """The survivor and every identity merged into it (GSI by_merged_into, a few levels deep)."""
        keys = [survivor_key]
        frontier = [survivor_key]
        for _ in range(MAX_MERGE_CHAIN):
            merged = [p.patient_key for key in frontier for p in Patient.by_merged_into.query(key)]
            merged = [k for k in merged if k not in keys]
            if not merged:
                break
            keys.extend(merged)
            frontier = merged
        return keys

    # --- studies ---------------------------------------------------------------------------

    def studies_of_patient(
        self, patient_key: str, date_from: str | None = None, date_to: str | None = None
    ) -> Iterator[StudyRecord]:
        """Studies of one identity (GSI by_patient), narrowed by StudyDate on the range key."""
        condition = _date_condition(Study.study_date, date_from, date_to)
        return (
            study_record(s)
            for s in Study.by_patient.query(patient_key, range_key_condition=condition)
            if not _all_rejected(s)
        )

    def studies_of_organisation(
        self, org_oid: str, date_from: str | None = None, date_to: str | None = None
    ) -> Iterator[StudyRecord]:
        """An organisation's studies in a StudyDate range (GSI by_org_date), in date order.

        The index holds keys only; the studies are read 100 per BatchGetItem as the caller
        iterates, so a long range streams instead of being held in memory.
        """
        keys = (
            item.study_uid
            for item in Study.by_org_date.query(
                org_oid, range_key_condition=_date_condition(Study.study_date, date_from, date_to)
            )
        )
        return self._studies_in_order(keys)

    def studies_with_modality(
        self, org_oid: str, modality: str, date_from: str | None = None, date_to: str | None = None
    ) -> Iterator[StudyRecord]:
        """An organisation's studies with a series of ``modality`` (GSI by_org_modality on Series),
        optionally in a StudyDate range, in date order; each study once."""
        key = org_modality(org_oid, modality)
        if key is None:
            return iter(())
        condition = _date_condition(Series.study_date, date_from, date_to)
        keys = (item.study_uid for item in Series.by_org_modality.query(key, range_key_condition=condition))
        return self._studies_in_order(keys)

    def _studies_in_order(self, study_uids: Iterable[str]) -> Iterator[StudyRecord]:
        """Studies for a stream of UIDs (repeats dropped), BatchGetItem 100 at a time, in the stream's order."""
        unique = _first_sightings(study_uids)
        while chunk := list(islice(unique, BATCH)):
            found = {study.study_uid: study for study in Study.batch_get(chunk) if not _all_rejected(study)}
            yield from (study_record(found[uid]) for uid in chunk if uid in found)

    def studies(self, study_uids: Iterable[str]) -> list[StudyRecord]:
        uids = list(dict.fromkeys(study_uids))
        return [study_record(s) for s in Study.batch_get(uids) if not _all_rejected(s)] if uids else []

    def studies_by_accession(self, accession_number: str) -> list[StudyRecord]:
        return [study_record(s) for s in Study.by_accession.query(accession_number) if not _all_rejected(s)]

    # --- series and instances --------------------------------------------------------------

    def series_of_study(self, study_uid: str, series_uid: str | None = None) -> list[SeriesRecord]:
        """Every series of a study (one Query: the study is the Series table's partition)."""
        condition = Series.series_uid == series_uid if series_uid else None
        return [
            _series(s) for s in Series.query(study_uid, range_key_condition=condition) if not _all_rejected(s)
        ]

    def series(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], SeriesRecord]:
        """Series by (Study Instance UID, Series Instance UID), BatchGetItem 100 at a time."""
        unique = list(dict.fromkeys(keys))
        if not unique:
            return {}
        return {
            (s.study_uid, s.series_uid): _series(s) for s in Series.batch_get(unique) if not _all_rejected(s)
        }

    def instances_of_study(
        self, study_uid: str, series_uid: str | None = None, *, to_send: bool = False
    ) -> Iterator[InstanceRecord]:
        """Instances of a study, or of one series (begins_with on the GSI range key), in series order.

        ``to_send``: only what a retrieval needs to send them (``RETRIEVE_ATTRIBUTES``); the
        C-FIND attributes and dates are neither returned nor parsed (most of a Query's cost).
        """
        condition = Instance.series_sop.startswith(f"{series_uid}/") if series_uid else None
        # IOCM: instances hidden by a rejection note are not query or retrieve results.
        return (
            instance_record(i)
            for i in Instance.by_study.query(
                study_uid,
                range_key_condition=condition,
                filter_condition=Instance.rejected.does_not_exist(),
                attributes_to_get=list(RETRIEVE_ATTRIBUTES) if to_send else None,
            )
        )

    def instances(self, sop_instance_uids: Iterable[str]) -> list[InstanceRecord]:
        """Instances by SOP Instance UID, without those a rejection note hides."""
        uids = list(dict.fromkeys(sop_instance_uids))
        found = (instance_record(i) for i in Instance.batch_get(uids)) if uids else iter(())
        return [i for i in found if not i.rejected]


def _all_rejected(item: Study | Series) -> bool:
    """A study or series whose every instance a rejection note hides is not shown at all."""
    return bool(item.rejected_instances) and not item.number_of_instances


def _patient(item: Patient) -> PatientRecord:
    return PatientRecord(
        patient_key=item.patient_key,
        patient_id=item.patient_id,
        issuer=item.issuer,
        patient_name=item.patient_name,
        birth_date=item.birth_date,
        sex=item.sex,
        org_oid=item.org_oid,
        merged_into=item.merged_into,
    )


def _series(item: Series) -> SeriesRecord:
    return SeriesRecord(
        study_uid=item.study_uid,
        series_uid=item.series_uid,
        modality=item.modality,
        series_number=item.series_number,
        series_description=item.series_description,
        series_date=item.series_date,
        body_part_examined=item.body_part_examined,
        number_of_instances=int(item.number_of_instances or 0),
        nearline_instances=max(0, int(item.nearline_instances or 0)),
    )
