"""Data access for the index: patients, studies, series and instances in DynamoDB.

Every write is idempotent: an instance is recorded in one transaction that also updates the
study and series aggregates, conditioned on the instance not being indexed yet, so a redelivered
S3 event changes nothing.
"""

from __future__ import annotations

import random
import time
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

from pynamodb.exceptions import DoesNotExist, TransactWriteError, UpdateError
from pynamodb.transactions import TransactWrite

from archive.config import Settings
from archive.data.models import (
    Instance,
    Patient,
    Series,
    Study,
    TransactionConnection,
    conditional_check_failed,
)
from archive.errors import PatientIdConflict, StudyOfAnotherOrganisation
from archive.model.records import IndexedInstance, InstanceRecord, StudyRecord
from archive.model.tiers import NEARLINE

# DynamoDB refuses empty strings in index keys; a study without a date sorts first under this value.
STUDY_DATE_UNKNOWN = "0"
MAX_MERGE_CHAIN = 16
KNOWN_SERIES_CACHE = 10_000
MAX_CONFLICT_RETRIES = 5
# Kept per instance: C-FIND IMAGE level, and what registration needs (manifest times, IAN's
# performed procedure step, the XDS typeCode and anatomic region).
INSTANCE_ATTRIBUTES = (
    "InstanceNumber",
    "ContentDate",
    "ContentTime",
    "TimezoneOffsetFromUTC",
    "PerformedProcedureStep",
    "ProcedureCode",
    "AnatomicRegion",
)


class IndexRepository(TransactionConnection):
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        # Series this process has seen indexed: their instances skip the "new series" attempt.
        self._known_series: OrderedDict[tuple[str, str], None] = OrderedDict()

    def _remember_series(self, key: tuple[str, str]) -> None:
        self._known_series[key] = None
        self._known_series.move_to_end(key)
        while len(self._known_series) > KNOWN_SERIES_CACHE:
            self._known_series.popitem(last=False)

    # --- patients --------------------------------------------------------------------------

    def resolve_patient(self, patient_key: str) -> str:
        """Follow merges (HL7 A40) to the surviving identity's key.

        Strongly consistent reads: an image that arrives a moment after a merge must attach to
        the survivor, not to the identity the merge just retired.
        """
        key = patient_key
        for _ in range(MAX_MERGE_CHAIN):
            try:
                patient = Patient.get(key, consistent_read=True)
            except DoesNotExist:
                return key
            if not patient.merged_into:
                return key
            key = patient.merged_into
        return key

    # --- studies ---------------------------------------------------------------------------

    def claim_study_patient(self, study_uid: str, patient_key: str, org_oid: str) -> None:
        """Bind a study to its patient and organisation on first sight; refuse another organisation
        (0x0124) or a different patient (A778) later.

        Done by the listener before an instance is acknowledged, with a conditional write, so two
        associations sending the same study for different patients or organisations cannot both
        succeed. The organisation that first stored a study controls it: another one sending an
        instance of it, even for the same (shared, e.g. national) patient ID, changes nothing.
        """
        study = Study(study_uid)
        try:
            study.update(
                actions=[
                    Study.patient_key.set(patient_key),
                    Study.org_oid.set(Study.org_oid | org_oid),
                ],
                condition=(Study.patient_key.does_not_exist() | (Study.patient_key == patient_key))
                & (Study.org_oid.does_not_exist() | (Study.org_oid == org_oid)),
            )
        except UpdateError as exc:
            if conditional_check_failed(exc):
                existing = Study.get(study_uid, consistent_read=True)
                if existing.org_oid and existing.org_oid != org_oid:
                    raise StudyOfAnotherOrganisation(
                        f"Study is controlled by another organisation: {study_uid}"
                    ) from exc
                current = existing.patient_key
                if current and self.resolve_patient(current) == patient_key:
                    # The study's patient was merged into this one (HL7 A40) before the merge
                    # re-pointed the study: the same person, so re-point it now.
                    self._repoint_study(study_uid, current, patient_key)
                    return
                raise PatientIdConflict(
                    f"Study belongs to another Patient ID: {current}, not {patient_key}"
                ) from exc
            raise

    def _repoint_study(self, study_uid: str, from_key: str, to_key: str) -> None:
        try:
            Study(study_uid).update(
                actions=[Study.patient_key.set(to_key)],
                condition=(Study.patient_key == from_key) | (Study.patient_key == to_key),
            )
        except UpdateError as exc:
            if conditional_check_failed(exc):
                raise PatientIdConflict(f"study {study_uid} changed patient concurrently") from exc
            raise

    def get_study(self, study_uid: str) -> StudyRecord | None:
        try:
            return study_record(Study.get(study_uid))
        except DoesNotExist:
            return None

    # --- instances -------------------------------------------------------------------------

    def get_instance(self, sop_instance_uid: str, *, consistent: bool = True) -> InstanceRecord | None:
        try:
            return instance_record(Instance.get(sop_instance_uid, consistent_read=consistent))
        except DoesNotExist:
            return None

    def get_instances(self, sop_instance_uids: list[str]) -> dict[str, InstanceRecord]:
        """Several instances by SOP Instance UID (BatchGetItem, 100 keys a request)."""
        unique = list(dict.fromkeys(sop_instance_uids))
        if not unique:
            return {}
        return {
            item.sop_instance_uid: instance_record(item)
            for item in Instance.batch_get(unique, consistent_read=True)
        }

    def study_held(self, study_uid: str) -> bool:
        """Whether a legal hold names the study now (its active holds' count; one GetItem)."""
        try:
            study = Study.get(study_uid, consistent_read=True, attributes_to_get=["legal_holds"])
        except DoesNotExist:
            return False
        return int(study.legal_holds or 0) > 0

    def record_instance(self, item: IndexedInstance) -> bool:
        """Record an instance and its aggregates; False if it was indexed already.

        The series count of the study is raised only by the transaction that creates the series
        (conditioned on the series not existing); a series this process has seen already skips
        that attempt.
        """
        series = (item.study_uid, item.series_uid)
        new_series = series not in self._known_series
        conflicts = 0
        while True:
            try:
                self._record(item, new_series=new_series)
                self._remember_series(series)
                return True
            except TransactWriteError as exc:
                reasons = [getattr(r, "code", None) for r in (exc.cancellation_reasons or [])]
                if reasons and reasons[0] == "ConditionalCheckFailed":
                    self._remember_series(series)
                    return False
                if new_series and len(reasons) > 1 and reasons[1] == "ConditionalCheckFailed":
                    new_series = False  # another instance created the series first
                    continue
                if "TransactionConflict" in reasons and conflicts < MAX_CONFLICT_RETRIES:
                    # Concurrent Lambdas updating the same study: back off briefly and try again
                    # rather than waiting a whole visibility timeout for the redelivery.
                    conflicts += 1
                    time.sleep(random.uniform(0, 0.05 * 2**conflicts))  # noqa: S311 - jitter, not crypto
                    continue
                raise

    def _record(self, item: IndexedInstance, *, new_series: bool) -> None:
        a = item.attributes
        now = datetime.now(UTC)
        instance = Instance(
            item.sop_instance_uid,
            sop_class_uid=item.sop_class_uid,
            study_uid=item.study_uid,
            series_uid=item.series_uid,
            series_sop=f"{item.series_uid}/{item.sop_instance_uid}",
            instance_number=a.get("InstanceNumber"),
            transfer_syntax_uid=item.transfer_syntax_uid,
            s3_key=item.s3_key,
            s3_version_id=item.s3_version_id,
            sha256=item.sha256,
            size=item.size,
            sending_ae=item.sending_ae,
            org_oid=item.org_oid,
            received_at=item.received_at,
            indexed_at=now,
            rows=_int(a.get("Rows")),
            columns=_int(a.get("Columns")),
            number_of_frames=_int(a.get("NumberOfFrames")),
            attributes={k: v for k, v in a.items() if k in INSTANCE_ATTRIBUTES},
        )
        series_actions = [
            Series.number_of_instances.add(1),
            Series.updated_at.set(now),
            *_set_if_absent(
                Series,
                modality=a.get("Modality"),
                series_number=a.get("SeriesNumber"),
                series_description=a.get("SeriesDescription"),
                series_date=a.get("SeriesDate"),
                body_part_examined=a.get("BodyPartExamined"),
                org_modality=org_modality(item.org_oid, a.get("Modality")),
                study_date=a.get("StudyDate") or STUDY_DATE_UNKNOWN,
            ),
        ]
        study_actions = [
            Study.number_of_instances.add(1),
            Study.total_bytes.add(item.size),
            Study.updated_at.set(now),
            Study.first_received_at.set(Study.first_received_at | item.received_at),
            Study.sop_classes.add({item.sop_class_uid}),
            Study.patient_key.set(Study.patient_key | item.patient_key),
            Study.study_date.set(Study.study_date | (a.get("StudyDate") or STUDY_DATE_UNKNOWN)),
            *_set_if_absent(
                Study,
                org_oid=item.org_oid,
                patient_id=item.patient_id,
                issuer=item.issuer,
                patient_name=a.get("PatientName"),
                patient_birth_date=a.get("PatientBirthDate"),
                patient_sex=a.get("PatientSex"),
                study_time=a.get("StudyTime"),
                accession_number=a.get("AccessionNumber"),
                accession_issuer=a.get("AccessionIssuer"),
                study_id=a.get("StudyID"),
                study_description=a.get("StudyDescription"),
                referring_physician_name=a.get("ReferringPhysicianName"),
                specific_character_set=a.get("SpecificCharacterSet"),
            ),
        ]
        if a.get("Modality"):
            study_actions.append(Study.modalities.add({a["Modality"]}))
        if a.get("BodyPartExamined"):
            study_actions.append(Study.body_parts.add({a["BodyPartExamined"]}))
        if new_series:
            study_actions.append(Study.number_of_series.add(1))
        patient_actions = [
            Patient.updated_at.set(now),
            *_set_if_absent(
                Patient,
                patient_id=item.patient_id,
                issuer=item.issuer,
                org_oid=item.org_oid,
                patient_name=a.get("PatientName"),
                birth_date=a.get("PatientBirthDate"),
                sex=a.get("PatientSex"),
            ),
        ]
        with TransactWrite(connection=self._connection()) as tx:
            tx.save(instance, condition=Instance.sop_instance_uid.does_not_exist())
            tx.update(
                Series(item.study_uid, item.series_uid),
                actions=series_actions,
                condition=Series.series_uid.does_not_exist() if new_series else None,
            )
            tx.update(Study(item.study_uid), actions=study_actions)
            tx.update(Patient(item.patient_key), actions=patient_actions)


def org_modality(org_oid: str | None, modality: str | None) -> str | None:
    """The by_org_modality index key of a series; None (not indexed) without both parts."""
    return f"{org_oid}|{modality}" if org_oid and modality else None


def study_record(item: Study) -> StudyRecord:
    return StudyRecord(
        study_uid=item.study_uid,
        patient_key=item.patient_key,
        org_oid=item.org_oid,
        patient_id=item.patient_id,
        issuer=item.issuer,
        patient_name=item.patient_name,
        patient_birth_date=item.patient_birth_date,
        patient_sex=item.patient_sex,
        study_date=item.study_date,
        study_time=item.study_time,
        accession_number=item.accession_number,
        study_id=item.study_id,
        study_description=item.study_description,
        referring_physician_name=item.referring_physician_name,
        modalities=frozenset(item.modalities or ()),
        sop_classes=frozenset(item.sop_classes or ()),
        number_of_series=int(item.number_of_series or 0),
        number_of_instances=int(item.number_of_instances or 0),
        nearline_instances=max(0, int(item.nearline_instances or 0)),
    )


def instance_record(item: Instance) -> InstanceRecord:
    return InstanceRecord(
        sop_instance_uid=item.sop_instance_uid,
        sop_class_uid=item.sop_class_uid,
        study_uid=item.study_uid,
        series_uid=item.series_uid,
        transfer_syntax_uid=item.transfer_syntax_uid,
        s3_key=item.s3_key,
        s3_version_id=item.s3_version_id,
        sha256=item.sha256,
        size=int(item.size),
        instance_number=item.instance_number,
        rows=_int(item.rows),
        columns=_int(item.columns),
        number_of_frames=_int(item.number_of_frames),
        attributes=dict(item.attributes) if item.attributes else None,
        org_oid=item.org_oid,
        rejected=item.rejected,
        nearline=item.availability == NEARLINE,
    )


def _set_if_absent(model: Any, **values: Any) -> list[Any]:
    """SET attr = if_not_exists(attr, value) for each non-empty value: the first instance wins."""
    actions = []
    for name, value in values.items():
        if value is None or value == "":
            continue
        attribute = getattr(model, name)
        actions.append(attribute.set(attribute | value))
    return actions


def _int(value: Any) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None
