"""Read access to the index for C-FIND, C-MOVE and C-GET: only key and index lookups, never a scan.

Each method is one GetItem, BatchGetItem or Query on a table key or GSI; the callers (the query
planner and the retrieval) decide which one a request can use and refuse requests that fit none.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from pynamodb.exceptions import DoesNotExist
from pynamodb.expressions.condition import Condition

from archive.data.index import MAX_MERGE_CHAIN, IndexRepository, instance_record, study_record
from archive.data.models import Instance, Patient, Series, Study
from archive.model.records import InstanceRecord, PatientRecord, SeriesRecord, StudyRecord


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
        condition: Condition | None = None
        if date_from and date_to:
            condition = Study.study_date.between(date_from, date_to)
        elif date_from:
            condition = Study.study_date >= date_from
        elif date_to:
            condition = Study.study_date <= date_to
        return (study_record(s) for s in Study.by_patient.query(patient_key, range_key_condition=condition))

    def studies(self, study_uids: Iterable[str]) -> list[StudyRecord]:
        uids = list(dict.fromkeys(study_uids))
        return [study_record(s) for s in Study.batch_get(uids)] if uids else []

    def studies_by_accession(self, accession_number: str) -> list[StudyRecord]:
        return [study_record(s) for s in Study.by_accession.query(accession_number)]

    # --- series and instances --------------------------------------------------------------

    def series_of_study(self, study_uid: str, series_uid: str | None = None) -> list[SeriesRecord]:
        condition = Series.series_uid == series_uid if series_uid else None
        return [_series(s) for s in Series.query(study_uid, range_key_condition=condition)]

    def instances_of_study(self, study_uid: str, series_uid: str | None = None) -> Iterator[InstanceRecord]:
        """Instances of a study, or of one series (begins_with on the GSI range key), in series order."""
        condition = Instance.series_sop.startswith(f"{series_uid}/") if series_uid else None
        return (instance_record(i) for i in Instance.by_study.query(study_uid, range_key_condition=condition))

    def instances(self, sop_instance_uids: Iterable[str]) -> list[InstanceRecord]:
        uids = list(dict.fromkeys(sop_instance_uids))
        return [instance_record(i) for i in Instance.batch_get(uids)] if uids else []


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
    )
