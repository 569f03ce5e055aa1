"""C-FIND: from an identifier to matches, through key and index lookups only.

The planner picks the narrowest lookup the identifier allows (see docs/conformance-query-retrieve.md):

1. StudyInstanceUID (single value or UID list)  -> Study GetItem / BatchGetItem
2. AccessionNumber (single value)                 -> Study GSI by_accession
3. PatientID (single value, optional issuer)      -> Patient GSI by_patient_id, then Study GSI
                                                     by_patient (StudyDate range on its range key)
4. ModalitiesInStudy (values without wildcards)   -> Series GSI by_org_modality (the caller's
                                                     organisation + modality; StudyDate range on
                                                     its range key), then Study BatchGetItem
5. StudyDate (single value or range)              -> Study GSI by_org_date (the caller's
                                                     organisation + date), then Study BatchGetItem
6. SOPInstanceUID list at IMAGE level             -> Instance BatchGetItem

Series and instances below the chosen studies come from one Series table Query and one Instance
GSI by_study Query per study (never one request per series), or BatchGetItem where the keys are
known. The other keys are matched (PS3.4 C.2.2.2) on the items these lookups return. An identifier
that allows none of the lookups would be a search over the whole country: refused. Only studies
whose controller is the caller's organisation are visible (see the conformance doc).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataset import Dataset

from archive.data.index import STUDY_DATE_UNKNOWN
from archive.data.query_index import QueryIndex
from archive.dicom.coercion import UTF8, issuer_qualifiers
from archive.errors import CountryWideQuery, QueryRefused
from archive.model.records import InstanceRecord, PatientDemographics, SeriesRecord, StudyRecord
from archive.model.tiers import NEARLINE, ONLINE
from archive.services.query.matching import (
    date_range,
    has_wildcard,
    is_single_value,
    is_universal,
    matches,
    uid_list,
)
from archive.services.query.patients import CurrentPatients

PATIENT_ROOT = "PATIENT"
STUDY_ROOT = "STUDY"
LEVELS = ("PATIENT", "STUDY", "SERIES", "IMAGE")
# Keys describing the request itself, never matched.
UNIQUE_KEYS = {
    "PATIENT": "PatientID",
    "STUDY": "StudyInstanceUID",
    "SERIES": "SeriesInstanceUID",
    "IMAGE": "SOPInstanceUID",
}
# Patient identity keys are matched by the lookup itself (through merges), not again on the result:
# a query for a merged (old) Patient ID answers with the surviving identity.
PATIENT_LOOKUP_KEYS = frozenset({"PatientID", "IssuerOfPatientID"})
CONTROL_KEYS = frozenset({"QueryRetrieveLevel", "SpecificCharacterSet", "TimezoneOffsetFromUTC"})
# The keys the index holds, by the level that holds them. A non-universal key the archive holds
# matches only an entity that has a value for it (C.2.2.2: PatientName=SMITH* never matches a
# patient without a name); a key the archive does not hold is not used for matching at all.
PATIENT_KEYS = frozenset(
    {
        "PatientID",
        "IssuerOfPatientID",
        "PatientName",
        "PatientBirthDate",
        "PatientSex",
        "NumberOfPatientRelatedStudies",
        "NumberOfPatientRelatedSeries",
        "NumberOfPatientRelatedInstances",
    }
)
STUDY_KEYS = frozenset(
    {
        "StudyInstanceUID",
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "StudyID",
        "StudyDescription",
        "ReferringPhysicianName",
        "ModalitiesInStudy",
        "SOPClassesInStudy",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
    }
)
SERIES_KEYS = frozenset(
    {
        "SeriesInstanceUID",
        "Modality",
        "SeriesNumber",
        "SeriesDescription",
        "SeriesDate",
        "BodyPartExamined",
        "NumberOfSeriesRelatedInstances",
    }
)
IMAGE_KEYS = frozenset(
    {
        "SOPInstanceUID",
        "SOPClassUID",
        "InstanceNumber",
        "Rows",
        "Columns",
        "NumberOfFrames",
        "ContentDate",
        "ContentTime",
        "AvailableTransferSyntaxUID",
    }
)
# What can be matched once the entities down to a level are known (keys of lower levels wait).
HELD_AT = {
    "PATIENT": PATIENT_KEYS,
    "STUDY": PATIENT_KEYS | STUDY_KEYS,
    "SERIES": PATIENT_KEYS | STUDY_KEYS | SERIES_KEYS,
    "IMAGE": PATIENT_KEYS | STUDY_KEYS | SERIES_KEYS | IMAGE_KEYS,
}


@dataclass(frozen=True)
class QueryRequest:
    """A C-FIND (or C-MOVE/C-GET) identifier: information model root, level, keys by keyword."""

    root: str
    level: str
    keys: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_identifier(cls, identifier: Dataset, root: str) -> QueryRequest:
        level = str(identifier.get("QueryRetrieveLevel", "") or "").strip().upper()
        if level not in LEVELS:
            raise QueryRefused(f"Query/Retrieve Level {level!r} is not one of {', '.join(LEVELS)}")
        if root == STUDY_ROOT and level == "PATIENT":
            raise QueryRefused("PATIENT level is not part of the Study Root information model")
        keys: dict[str, str] = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for element in identifier:
                keyword = element.keyword or keyword_for_tag(element.tag)
                if not keyword or keyword in CONTROL_KEYS:
                    continue
                keys[keyword] = _as_text(element.value, element.VR)
        return cls(root, level, keys)

    def value(self, keyword: str) -> str:
        return self.keys.get(keyword, "")

    def given(self, keyword: str) -> bool:
        return keyword in self.keys and not is_universal(self.keys[keyword])

    def level_unique_key(self) -> str:
        return UNIQUE_KEYS[self.level]

    def summary(self) -> dict[str, str]:
        """The non-universal keys (what was asked), for the access record."""
        return {k: v for k, v in self.keys.items() if not is_universal(v)}


def _as_text(value: Any, vr: str) -> str:
    if vr == "SQ":
        return ""
    if value is None:
        return ""
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value)


@dataclass(frozen=True)
class FindMatch:
    """One C-FIND pending response and what it disclosed."""

    identifier: Dataset
    patient_key: str
    controller_oid: str | None
    study_uid: str | None = None
    sop_instance_uids: tuple[str, ...] = ()


Attributes = dict[str, Any]


def _vr(keyword: str) -> str:
    try:
        return str(dictionary_VR(keyword))
    except KeyError:
        return "UN"


def _study_date(study: StudyRecord) -> str | None:
    date = study.study_date
    return None if not date or date == STUDY_DATE_UNKNOWN else date


def study_attributes(study: StudyRecord) -> Attributes:
    return {
        "StudyInstanceUID": study.study_uid,
        "StudyDate": _study_date(study),
        "StudyTime": study.study_time,
        "AccessionNumber": study.accession_number,
        "StudyID": study.study_id,
        "StudyDescription": study.study_description,
        "ReferringPhysicianName": study.referring_physician_name,
        "ModalitiesInStudy": sorted(study.modalities or ()),
        "SOPClassesInStudy": sorted(study.sop_classes or ()),
        "NumberOfStudyRelatedSeries": int(study.number_of_series or 0),
        "NumberOfStudyRelatedInstances": int(study.number_of_instances or 0),
        "InstanceAvailability": NEARLINE if study.nearline_instances else ONLINE,
    }


def series_attributes(series: SeriesRecord) -> Attributes:
    return {
        "SeriesInstanceUID": series.series_uid,
        "Modality": series.modality,
        "SeriesNumber": series.series_number,
        "SeriesDescription": series.series_description,
        "SeriesDate": series.series_date,
        "BodyPartExamined": series.body_part_examined,
        "NumberOfSeriesRelatedInstances": int(series.number_of_instances or 0),
        "InstanceAvailability": NEARLINE if series.nearline_instances else ONLINE,
    }


def instance_attributes(instance: InstanceRecord) -> Attributes:
    extra = dict(instance.attributes or {})
    return {
        "SOPInstanceUID": instance.sop_instance_uid,
        "SOPClassUID": instance.sop_class_uid,
        "SeriesInstanceUID": instance.series_uid,
        "InstanceNumber": instance.instance_number,
        "Rows": instance.rows,
        "Columns": instance.columns,
        "NumberOfFrames": instance.number_of_frames,
        "ContentDate": extra.get("ContentDate"),
        "ContentTime": extra.get("ContentTime"),
        "AvailableTransferSyntaxUID": instance.transfer_syntax_uid,
        "InstanceAvailability": NEARLINE if instance.nearline else ONLINE,
    }


def matches_all(
    request: QueryRequest,
    attributes: Attributes,
    skip: frozenset[str] = frozenset(),
    *,
    held: frozenset[str] = HELD_AT["IMAGE"],
) -> bool:
    """Every matching key among ``held`` matches; an entity without a value for one does not.

    Keys outside ``held`` (not held by the archive, or held at a level not looked at yet) and keys
    in ``skip`` (matched by the lookup itself) are not used here.
    """
    for keyword, value in request.keys.items():
        if keyword not in held or keyword in skip or is_universal(value):
            continue
        stored = attributes.get(keyword)
        if isinstance(stored, int):
            stored = str(stored)
        if not matches(value, stored, _vr(keyword)):
            return False
    return True


def build_response(request: QueryRequest, attributes: Attributes, archive_ae: str) -> Dataset:
    """The requested return keys (empty where the archive has no value) plus the unique keys."""
    ds = Dataset()
    ds.SpecificCharacterSet = UTF8
    ds.QueryRetrieveLevel = request.level
    unique = {"PATIENT": ["PatientID"], "STUDY": ["StudyInstanceUID"]}.get(request.level, [])
    if request.level in ("SERIES", "IMAGE"):
        unique = ["StudyInstanceUID", "SeriesInstanceUID"]
    if request.level == "IMAGE":
        unique.append("SOPInstanceUID")
    for keyword in [*request.keys, *unique]:
        vr = _vr(keyword)
        if vr == "UN":
            continue
        value = attributes.get(keyword)
        if keyword == "IssuerOfPatientIDQualifiersSequence":
            issuer = attributes.get("IssuerOfPatientID")
            setattr(ds, keyword, [issuer_qualifiers(issuer)] if issuer else [])
        elif vr == "SQ":
            setattr(ds, keyword, [])
        elif value is None or value == []:
            setattr(ds, keyword, None)
        else:
            setattr(ds, keyword, value)
    ds.RetrieveAETitle = archive_ae
    # PS3.4 C.4.1.1.3.2 asks for the availability of the entity: a study or series with any
    # instance that needs a restore is NEARLINE (the least available of its instances).
    ds.InstanceAvailability = attributes.get("InstanceAvailability") or ONLINE
    return ds


class QueryService:
    """Answers C-FIND requests for one organisation from the index."""

    def __init__(self, index: QueryIndex, archive_ae: str) -> None:
        self._index = index
        self._archive_ae = archive_ae

    def find(self, request: QueryRequest, org_oid: str) -> Iterator[FindMatch]:
        """Matches in index order; raises QueryRefused (or CountryWideQuery) before the first."""
        patients = CurrentPatients(self._index.current_patient_key, self._index.patient)
        if request.level == "PATIENT":
            yield from self._patients(request, org_oid, patients)
            return
        if request.level == "IMAGE" and request.given("SOPInstanceUID"):
            yield from self._instances_by_uid(request, org_oid, patients)
            return
        studies, skip = self.plan_studies(request, org_oid)
        series_filter = request.value("SeriesInstanceUID") if request.given("SeriesInstanceUID") else ""
        single_series = series_filter if is_single_value(series_filter, "UI") else None
        for study in studies:
            patient = patients.for_study(study)
            study_attrs = {**patient.attributes(), **study_attributes(study)}
            if not matches_all(request, study_attrs, skip, held=HELD_AT["STUDY"]):
                continue
            if request.level == "STUDY":
                ds = build_response(request, study_attrs, self._archive_ae)
                yield FindMatch(ds, patient.patient_key, study.org_oid, study.study_uid)
                continue
            # One Query for the study's series; at IMAGE level one more for all its instances.
            matched: dict[str, Attributes] = {}
            for series in self._index.series_of_study(study.study_uid, single_series):
                series_attrs = {**study_attrs, **series_attributes(series)}
                if not matches_all(request, series_attrs, skip, held=HELD_AT["SERIES"]):
                    continue
                if request.level == "SERIES":
                    ds = build_response(request, series_attrs, self._archive_ae)
                    yield FindMatch(ds, patient.patient_key, study.org_oid, study.study_uid)
                else:
                    matched[series.series_uid] = series_attrs
            if not matched:
                continue
            for instance in self._index.instances_of_study(study.study_uid, single_series):
                of_series = matched.get(instance.series_uid)
                if of_series is None:
                    continue
                attrs = {**of_series, **instance_attributes(instance)}
                if matches_all(request, attrs, skip):
                    ds = build_response(request, attrs, self._archive_ae)
                    yield FindMatch(
                        ds, patient.patient_key, study.org_oid, study.study_uid, (instance.sop_instance_uid,)
                    )

    # --- planning --------------------------------------------------------------------------

    def studies_for(self, request: QueryRequest, org_oid: str) -> list[StudyRecord]:
        """The studies the identifier names, by the narrowest key lookup, visible to ``org_oid``."""
        return list(self.plan_studies(request, org_oid)[0])

    def plan_studies(
        self, request: QueryRequest, org_oid: str
    ) -> tuple[Iterator[StudyRecord], frozenset[str]]:
        """Studies by the narrowest lookup, and the keys that lookup matched already.

        Raises QueryRefused (CountryWideQuery) at once; the studies are read as they are iterated.
        """
        skip: frozenset[str] = frozenset()
        studies: Iterable[StudyRecord]
        dates = self._date_ranges(request)
        modalities = self._modalities(request)
        if request.given("StudyInstanceUID"):
            value = request.value("StudyInstanceUID")
            if has_wildcard(value):
                raise QueryRefused("StudyInstanceUID takes a UID or a list of UIDs, not wildcards")
            studies = self._index.studies(uid_list(value))
        elif request.given("AccessionNumber") and is_single_value(request.value("AccessionNumber"), "SH"):
            studies = self._index.studies_by_accession(request.value("AccessionNumber").strip())
        elif request.given("PatientID") and is_single_value(request.value("PatientID"), "LO"):
            skip = PATIENT_LOOKUP_KEYS
            studies = (
                study
                for key in self._patient_keys(request)
                for identity in self._index.identities_of(key)
                for low, high in dates
                for study in self._index.studies_of_patient(identity, low, high)
            )
        elif modalities:
            # The caller's own studies only: the organisation is part of the index key.
            studies = (
                study
                for modality in modalities
                for low, high in dates
                for study in self._index.studies_with_modality(org_oid, modality, low, high)
            )
        elif request.given("StudyDate"):
            studies = (
                study
                for low, high in dates
                for study in self._index.studies_of_organisation(org_oid, low, high)
            )
        else:
            # Within the 64 characters of an Error Comment; the conformance statement has the full list.
            raise CountryWideQuery("needs PatientID, StudyUID, AccessionNumber, StudyDate, Modality")
        return (s for s in _unique_studies(studies) if s.org_oid == org_oid), skip

    @staticmethod
    def _date_ranges(request: QueryRequest) -> list[tuple[str | None, str | None]]:
        """StudyDate as index range-key bounds: one (low, high) per value; (None, None) if not given."""
        if not request.given("StudyDate"):
            return [(None, None)]
        return [date_range(value, "DA") for value in uid_list(request.value("StudyDate"))]

    @staticmethod
    def _modalities(request: QueryRequest) -> list[str]:
        """ModalitiesInStudy values usable as index keys; empty if not given or any has a wildcard."""
        if not request.given("ModalitiesInStudy"):
            return []
        values = uid_list(request.value("ModalitiesInStudy"))
        return [] if any(has_wildcard(v) for v in values) else values

    def _patient_keys(self, request: QueryRequest) -> list[str]:
        """Current (surviving) keys of the identities with the requested Patient ID and issuer."""
        patient_id = request.value("PatientID").strip()
        issuer = request.value("IssuerOfPatientID").strip() if request.given("IssuerOfPatientID") else None
        keys = []
        for patient in self._index.patients_by_id(patient_id):
            if issuer and patient.issuer != issuer:
                continue
            current = self._index.current_patient_key(patient.patient_key)
            if current not in keys:
                keys.append(current)
        return keys

    def _patients(
        self, request: QueryRequest, org_oid: str, patients: CurrentPatients
    ) -> Iterator[FindMatch]:
        if not (request.given("PatientID") and is_single_value(request.value("PatientID"), "LO")):
            raise CountryWideQuery("PATIENT level query needs a PatientID (no wildcards)")
        for key in self._patient_keys(request):
            studies = [
                s
                for identity in self._index.identities_of(key)
                for s in self._index.studies_of_patient(identity)
                if s.org_oid == org_oid
            ]
            if not studies:
                continue  # nothing of this patient is in the caller's register
            current = PatientDemographics.of(key, self._index.patient(key), studies[0])
            attrs: Attributes = {
                **current.attributes(),
                "NumberOfPatientRelatedStudies": len(studies),
                "NumberOfPatientRelatedSeries": sum(int(s.number_of_series or 0) for s in studies),
                "NumberOfPatientRelatedInstances": sum(int(s.number_of_instances or 0) for s in studies),
            }
            if matches_all(request, attrs, PATIENT_LOOKUP_KEYS, held=HELD_AT["PATIENT"]):
                yield FindMatch(build_response(request, attrs, self._archive_ae), key, org_oid)

    def _instances_by_uid(
        self, request: QueryRequest, org_oid: str, patients: CurrentPatients
    ) -> Iterator[FindMatch]:
        # Instances, then their studies, then their series: each a BatchGetItem (keys are known).
        instances = self._index.instances(uid_list(request.value("SOPInstanceUID")))
        studies = {s.study_uid: s for s in self._index.studies({i.study_uid for i in instances})}
        visible = [i for i in instances if i.study_uid in studies and studies[i.study_uid].org_oid == org_oid]
        series_by_key = self._index.series((i.study_uid, i.series_uid) for i in visible)
        for instance in visible:
            study = studies[instance.study_uid]
            series = series_by_key.get((instance.study_uid, instance.series_uid))
            patient = patients.for_study(study)
            attrs = {
                **patient.attributes(),
                **study_attributes(study),
                **(series_attributes(series) if series else {}),
                **instance_attributes(instance),
            }
            if matches_all(request, attrs):
                ds = build_response(request, attrs, self._archive_ae)
                yield FindMatch(
                    ds, patient.patient_key, study.org_oid, study.study_uid, (instance.sop_instance_uid,)
                )


def _unique_studies(studies: Iterable[StudyRecord]) -> Iterator[StudyRecord]:
    """Each study once (a study is found once per modality, date range or merged identity)."""
    seen: set[str] = set()
    for study in studies:
        if study.study_uid not in seen:
            seen.add(study.study_uid)
            yield study
