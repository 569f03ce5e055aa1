"""The patient identity as the index holds it *now*, looked up once per patient per request."""

from __future__ import annotations

from collections.abc import Callable

from archive.model.identity import PatientIdentity
from archive.model.records import PatientDemographics, PatientRecord, StudyRecord


class CurrentPatients:
    """Per-request cache of study patient -> current demographics (one resolve per patient)."""

    def __init__(self, resolve: Callable[[str], str], load: Callable[[str], PatientRecord | None]) -> None:
        self._resolve = resolve
        self._load = load
        self._cache: dict[tuple[str, str | None], PatientDemographics] = {}

    def for_study(self, study: StudyRecord) -> PatientDemographics:
        key = study.patient_key or PatientIdentity(study.patient_id or "", study.issuer or "").key
        # Per organisation too: a shared identity shows each organisation's own demographics.
        cache_key = (key, study.org_oid)
        if cache_key not in self._cache:
            current = self._resolve(key)
            self._cache[cache_key] = PatientDemographics.of(current, self._load(current), study)
        return self._cache[cache_key]
