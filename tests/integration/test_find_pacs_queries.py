"""The C-FIND queries an organisation's PACS really makes of its own data ("today's CT studies"),
answered from index lookups scoped to the caller's organisation, with DCMTK findscu as the PACS.

Two organisations store studies on the same dates with the same modalities; each sees only its own.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest
from archive.data.index import IndexRepository
from archive.data.models import Instance, Patient, Series, Study
from archive.data.query_index import QueryIndex
from archive.model.organisations import AEInfo, OrganisationInfo
from archive.services.query.find import QueryRequest, QueryService
from pydicom.dataset import Dataset

from local.cloud import LocalCloud, free_port
from tests.support.cloud import dcmtk, wait_until
from tests.support.dicom import HETU_ISSUER, ct_dataset, new_uid
from tests.support.scu import Modality

TODAY, YESTERDAY, EARLIER = "20261130", "20261129", "20261128"


@dataclass(frozen=True)
class Organisation:
    oid: str
    ae_title: str


@dataclass(frozen=True)
class StoredStudy:
    uid: str
    patient_id: str
    series: tuple[str, ...]
    instances: tuple[str, ...]


def organisation(cloud: LocalCloud) -> Organisation:
    n = uuid.uuid4().int % 10**8
    org = OrganisationInfo(
        f"1.2.246.10.66666666.{n}", f"PACS query clinic {n}", trusted_issuers=(HETU_ISSUER,)
    )
    ae_title = f"PACS_{n}"[:16]
    cloud.register(org, AEInfo(ae_title, org.oid, "127.0.0.1", free_port(), roles=("store", "query")))
    return Organisation(org.oid, ae_title)


def store_study(
    cloud: LocalCloud,
    org: Organisation,
    date: str,
    modalities: tuple[str, ...],
    name: str,
    per_series: int = 1,
) -> StoredStudy:
    """One study of a new patient: a series per modality, ``per_series`` instances each."""
    patient_id = f"Q{uuid.uuid4().hex[:12].upper()}"
    study_uid = new_uid()
    series = [new_uid() for _ in modalities]
    datasets = [
        ct_dataset(
            patient_id=patient_id,
            patient_name=name,
            study_uid=study_uid,
            series_uid=series_uid,
            modality=modality,
            study_date=date,
            instance_number=i + 1,
        )
        for series_uid, modality in zip(series, modalities, strict=True)
        for i in range(per_series)
    ]
    modality_scu = Modality(cloud.dicom_port, ae_title=org.ae_title)
    try:
        assert [modality_scu.store(ds) for ds in datasets] == [0x0000] * len(datasets)
    finally:
        modality_scu.release()
    return StoredStudy(study_uid, patient_id, tuple(series), tuple(str(ds.SOPInstanceUID) for ds in datasets))


def findscu(
    cloud: LocalCloud, org: Organisation, outdir: Path, *keys: str, root: str = "-S"
) -> list[Dataset]:
    outdir.mkdir(parents=True)
    args = [root, "-aet", org.ae_title, "-aec", "ARCHIVE", "-X", "-od", str(outdir)]
    for key in keys:
        args += ["-k", key]
    result = dcmtk("findscu", *args, "127.0.0.1", str(cloud.dicom_port))
    assert result.returncode == 0, result.stderr
    return [pydicom.dcmread(p) for p in sorted(outdir.glob("rsp*.dcm"))]


@dataclass
class Scene:
    a: Organisation
    b: Organisation
    a_today_ct: StoredStudy
    a_yesterday_mr: StoredStudy
    a_yesterday_ct_mr: StoredStudy
    a_earlier_ct_no_name: StoredStudy
    b_today_ct: StoredStudy
    b_yesterday_mr: StoredStudy


@pytest.fixture(scope="module")
def scene(cloud: LocalCloud) -> Scene:
    """Organisation A's four studies and B's two, on the same dates with the same modalities."""
    a, b = organisation(cloud), organisation(cloud)
    built = Scene(
        a=a,
        b=b,
        a_today_ct=store_study(cloud, a, TODAY, ("CT",), "Smith^John"),
        a_yesterday_mr=store_study(cloud, a, YESTERDAY, ("MR",), "SMITH^Jane"),
        a_yesterday_ct_mr=store_study(cloud, a, YESTERDAY, ("CT", "MR"), "Jones^Ann", per_series=2),
        a_earlier_ct_no_name=store_study(cloud, a, EARLIER, ("CT",), ""),
        b_today_ct=store_study(cloud, b, TODAY, ("CT",), "Smith^Bob"),
        b_yesterday_mr=store_study(cloud, b, YESTERDAY, ("MR",), "Smith^Eve"),
    )
    stored = [v for v in vars(built).values() if isinstance(v, StoredStudy)]
    wait_until(
        lambda: all(
            (s := Study.get(study.uid)) and s.number_of_instances == len(study.instances) for study in stored
        ),
        timeout=120,
        interval=0.5,
    )
    return built


def uids(found: list[Dataset]) -> set[str]:
    return {str(d.StudyInstanceUID) for d in found}


@pytest.mark.parametrize(
    ("keys", "expected_a", "expected_b"),
    [
        # today's studies
        ((f"StudyDate={TODAY}",), {"a_today_ct"}, {"b_today_ct"}),
        # a date range, and ranges open at either end
        (
            (f"StudyDate={YESTERDAY}-{TODAY}",),
            {"a_today_ct", "a_yesterday_mr", "a_yesterday_ct_mr"},
            {"b_today_ct", "b_yesterday_mr"},
        ),
        ((f"StudyDate=-{EARLIER}",), {"a_earlier_ct_no_name"}, set()),
        (
            (f"StudyDate={YESTERDAY}-",),
            {"a_today_ct", "a_yesterday_mr", "a_yesterday_ct_mr"},
            {"b_today_ct", "b_yesterday_mr"},
        ),
        # every CT study, whatever its date
        (
            ("ModalitiesInStudy=CT",),
            {"a_today_ct", "a_yesterday_ct_mr", "a_earlier_ct_no_name"},
            {"b_today_ct"},
        ),
        # yesterday's CT studies; yesterday's CT or MR studies
        ((f"StudyDate={YESTERDAY}", "ModalitiesInStudy=CT"), {"a_yesterday_ct_mr"}, set()),
        (
            (f"StudyDate={YESTERDAY}", "ModalitiesInStudy=CT\\MR"),
            {"a_yesterday_mr", "a_yesterday_ct_mr"},
            {"b_yesterday_mr"},
        ),
        # a name wildcard (case-insensitive) never matches the patient without a name
        (
            (f"StudyDate={EARLIER}-{TODAY}", "PatientName=SMITH*"),
            {"a_today_ct", "a_yesterday_mr"},
            {"b_today_ct", "b_yesterday_mr"},
        ),
    ],
    ids=["today", "range", "open-start", "open-end", "modality", "date+modality", "date+modalities", "name"],
)
def test_study_level_by_date_and_modality_answers_each_organisation_its_own_studies(
    cloud: LocalCloud,
    scene: Scene,
    workdir: Path,
    keys: tuple[str, ...],
    expected_a: set[str],
    expected_b: set[str],
) -> None:
    def studies(names: set[str]) -> set[str]:
        return {getattr(scene, name).uid for name in names}

    # When each organisation's PACS asks (findscu, Study Root, STUDY level)
    returned = [
        k
        for k in ("StudyInstanceUID", "ModalitiesInStudy", "PatientName")
        if not any(q.startswith(k) for q in keys)
    ]
    asked = ("QueryRetrieveLevel=STUDY", *keys, *returned)
    found_a = findscu(cloud, scene.a, workdir / "a", *asked)
    # Then A gets exactly its matching studies, with their modalities
    assert uids(found_a) == studies(expected_a)
    for answer in found_a:
        if str(answer.StudyInstanceUID) == scene.a_yesterday_ct_mr.uid:
            assert list(answer.ModalitiesInStudy) == ["CT", "MR"]
    # And B exactly its own: never one of A's
    assert uids(findscu(cloud, scene.b, workdir / "b", *asked)) == studies(expected_b)


def test_patient_without_a_name_does_not_match_a_name_wildcard(
    cloud: LocalCloud, scene: Scene, workdir: Path
) -> None:
    pid = scene.a_earlier_ct_no_name.patient_id
    # When A asks for that patient with a name wildcard, at PATIENT and at STUDY level
    by_name = ("PatientName=SMITH*",)
    patients = findscu(
        cloud, scene.a, workdir / "p", "QueryRetrieveLevel=PATIENT", f"PatientID={pid}", *by_name, root="-P"
    )
    studies = findscu(cloud, scene.a, workdir / "s", "QueryRetrieveLevel=STUDY", f"PatientID={pid}", *by_name)
    # Then nothing matches; without the name key the patient and the study are found
    assert patients == [] and studies == []
    found = findscu(
        cloud, scene.a, workdir / "all", "QueryRetrieveLevel=STUDY", f"PatientID={pid}", "PatientName"
    )
    assert uids(found) == {scene.a_earlier_ct_no_name.uid}
    assert found[0].PatientName == ""


def test_series_and_image_levels_below_a_date_lookup(cloud: LocalCloud, scene: Scene, workdir: Path) -> None:
    study = scene.a_yesterday_ct_mr
    # When A asks for yesterday's MR series, and for the images of one study's series
    series = findscu(
        cloud, scene.a, workdir / "se", "QueryRetrieveLevel=SERIES", f"StudyDate={YESTERDAY}", "Modality=MR",
        "SeriesInstanceUID",
    )  # fmt: skip
    images = findscu(
        cloud, scene.a, workdir / "im", "QueryRetrieveLevel=IMAGE", f"StudyInstanceUID={study.uid}",
        f"SeriesInstanceUID={study.series[1]}", "SOPInstanceUID",
    )  # fmt: skip
    # Then the MR series of both of A's studies of that day, and the two images of that series
    assert {str(d.SeriesInstanceUID) for d in series} == {scene.a_yesterday_mr.series[0], study.series[1]}
    assert {str(d.SOPInstanceUID) for d in images} == set(study.instances[2:])


def test_a_query_without_a_key_to_look_up_is_still_refused(
    cloud: LocalCloud, scene: Scene, workdir: Path
) -> None:
    result = dcmtk(
        "findscu", "-S", "-v", "-aet", scene.a.ae_title, "-aec", "ARCHIVE", "-k", "QueryRetrieveLevel=STUDY",
        "-k", "PatientName=SMITH*", "-k", "ModalitiesInStudy=C*", "127.0.0.1", str(cloud.dicom_port),
    )  # fmt: skip
    assert "DataSetDoesNotMatchSOPClass" in result.stderr or "a900" in result.stderr.lower(), result.stderr


# --- how many DynamoDB requests a query makes ---------------------------------------------------


@pytest.fixture
def dynamodb_calls(cloud: LocalCloud) -> Iterator[list[tuple[str, str]]]:
    """(operation, table[/index]) of every DynamoDB request the index models make in this process."""
    calls: list[tuple[str, str]] = []

    def record(model: Any, params: dict[str, Any], **_: Any) -> None:
        tables = [params["TableName"]] if "TableName" in params else list(params.get("RequestItems", {}))
        for table in tables:
            index = params.get("IndexName")
            calls.append((model.name, f"{table}/{index}" if index else table))

    clients = {
        id(c): c for c in (m._get_connection().connection.client for m in (Patient, Study, Series, Instance))
    }
    for client in clients.values():
        client.meta.events.register("before-parameter-build.dynamodb", record)
    try:
        yield calls
    finally:
        for client in clients.values():
            client.meta.events.unregister("before-parameter-build.dynamodb", record)


def _count(calls: list[tuple[str, str]], operation: str, table: Callable[[str], bool]) -> int:
    return sum(1 for op, name in calls if op == operation and table(name))


def test_queries_are_lookups_batched_per_study_never_per_series_and_never_scans(
    cloud: LocalCloud, scene: Scene, dynamodb_calls: list[tuple[str, str]]
) -> None:
    assert cloud.settings is not None
    queries = QueryService(QueryIndex(IndexRepository(cloud.settings)), "ARCHIVE")
    study = scene.a_yesterday_ct_mr  # two series of two images

    everything: list[tuple[str, str]] = []

    def run(level: str, **keys: str) -> int:
        everything.extend(dynamodb_calls)
        dynamodb_calls.clear()
        return len(list(queries.find(QueryRequest("STUDY", level, keys), scene.a.oid)))

    # IMAGE level for a whole study: one Query for its series, one for its instances (not one per series)
    assert run("IMAGE", StudyInstanceUID=study.uid) == 4
    assert _count(dynamodb_calls, "Query", lambda t: t.endswith("series")) == 1
    assert _count(dynamodb_calls, "Query", lambda t: t.endswith("instances/by_study")) == 1
    # IMAGE level by SOP Instance UIDs: instances, studies and series each one BatchGetItem
    assert run("IMAGE", SOPInstanceUID="\\".join(study.instances)) == 4
    assert _count(dynamodb_calls, "BatchGetItem", lambda t: t.endswith("series")) == 1
    assert _count(dynamodb_calls, "Query", lambda t: "series" in t or "instances" in t) == 0
    # STUDY level by date and modality: one index Query, the studies in one BatchGetItem
    assert run("STUDY", StudyDate=f"{EARLIER}-{TODAY}", ModalitiesInStudy="CT") == 3
    assert _count(dynamodb_calls, "Query", lambda t: t.endswith("series/by_org_modality")) == 1
    assert _count(dynamodb_calls, "BatchGetItem", lambda t: t.endswith("studies")) == 1
    assert run("STUDY", StudyDate=f"{EARLIER}-{TODAY}") == 4
    assert _count(dynamodb_calls, "Query", lambda t: t.endswith("studies/by_org_date")) == 1
    # And nothing ever scans
    everything.extend(dynamodb_calls)
    assert everything and all(op != "Scan" for op, _ in everything)
