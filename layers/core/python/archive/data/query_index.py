"""Read access to the index for C-FIND, C-MOVE and C-GET: only key and index lookups, never a scan.

Each method is one GetItem, BatchGetItem or Query on a table key or GSI; the callers (the query
planner and the retrieval) decide which one a request can use and refuse requests that fit none.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from pynamodb.exceptions import DoesNotExist
from pynamodb.expressions.condition import Condition

from archive.data.index import MAX_MERGE_CHAIN, IndexRepository
from archive.data.models import Instance, Patient, Series, Study


class QueryIndex:
    def __init__(self, index: IndexRepository) -> None:
        self._index = index

    # --- patients --------------------------------------------------------------------------

    def patients_by_id(self, patient_id: str) -> list[Patient]:
        """Every identity with this Patient ID, whatever its issuer (GSI by_patient_id)."""
        return list(Patient.by_patient_id.query(patient_id))

    def patient(self, patient_key: str) -> Patient | None:
        try:
            return Patient.get(patient_key)
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
    ) -> Iterator[Study]:
        """Studies of one identity (GSI by_patient), narrowed by StudyDate on the range key."""
        condition: Condition | None = None
        if date_from and date_to:
            condition = Study.study_date.between(date_from, date_to)
        elif date_from:
            condition = Study.study_date >= date_from
        elif date_to:
            condition = Study.study_date <= date_to
        return Study.by_patient.query(patient_key, range_key_condition=condition)

    def studies(self, study_uids: Iterable[str]) -> list[Study]:
        uids = list(dict.fromkeys(study_uids))
        return list(Study.batch_get(uids)) if uids else []

    def studies_by_accession(self, accession_number: str) -> list[Study]:
        return list(Study.by_accession.query(accession_number))

    # --- series and instances --------------------------------------------------------------

    def series_of_study(self, study_uid: str, series_uid: str | None = None) -> list[Series]:
        condition = Series.series_uid == series_uid if series_uid else None
        return list(Series.query(study_uid, range_key_condition=condition))

    def instances_of_study(self, study_uid: str, series_uid: str | None = None) -> Iterator[Instance]:
        """Instances of a study, or of one series (begins_with on the GSI range key), in series order."""
        condition = Instance.series_sop.startswith(f"{series_uid}/") if series_uid else None
        return Instance.by_study.query(study_uid, range_key_condition=condition)

    def instances(self, sop_instance_uids: Iterable[str]) -> list[Instance]:
        uids = list(dict.fromkeys(sop_instance_uids))
        return list(Instance.batch_get(uids)) if uids else []
