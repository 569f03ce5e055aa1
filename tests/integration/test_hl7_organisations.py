"""Given two organisations that share a national patient (hetu, issuer 1.2.246.21), when one of
them sends HL7, then it changes only what it controls: its own studies. The other organisation's
studies stay as they were, as its own C-FIND and C-GET see them; what it may not change is refused
(AE 204) and recorded, readable with the admin CLI."""

from __future__ import annotations

from pathlib import Path

import pydicom
from archive.data.facilities import FacilityRepository
from archive.data.models import Study
from archive.data.patients import PatientRepository
from archive.model.identity import PatientIdentity
from archive.model.organisations import AEInfo, FacilityInfo, OrganisationInfo
from pydicom.dataset import Dataset

from local.cloud import DEMO_ORG, LocalCloud, free_port
from tests.support.cloud import admin_records, dcmtk, getscu, storescu, wait_until
from tests.support.dicom import HETU_ISSUER
from tests.support.dicom import study as make_study
from tests.support.hl7 import adt, exchange, frame, fresh_id, wait_for_change

A_PACS = "DEMO_PACS"  # organisation A: the demo hospital
B_ORG = OrganisationInfo("1.2.246.10.55556666.10", "Other Hospital", (HETU_ISSUER,), None)
B_PACS = "OTHER_PACS"
B_FACILITY = "OTHER_ADT"
HETU = f"&{HETU_ISSUER}&ISO"


def hetu() -> str:
    return f"0101{fresh_id('')[:2]}A9{fresh_id('')[:3]}"


def register_b(cloud: LocalCloud) -> None:
    roles = ("store", "query", "retrieve", "move-destination")
    cloud.register(B_ORG, AEInfo(B_PACS, B_ORG.oid, "127.0.0.1", free_port(), roles=roles))
    FacilityRepository().add(FacilityInfo(B_FACILITY, B_ORG.oid, {}), replace=True)


def store(cloud: LocalCloud, aet: str, workdir: Path, patient_id: str, name: str) -> str:
    workdir.mkdir(parents=True, exist_ok=True)
    files = make_study(workdir, 2, patient_id=patient_id, issuer=HETU_ISSUER, patient_name=name)
    result = storescu(cloud, files, aet=aet)
    assert result.returncode == 0, result.stderr
    study_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    wait_until(lambda: (s := Study.get(study_uid)) and s.number_of_instances == 2, timeout=120)
    return study_uid


def find(cloud: LocalCloud, aet: str, workdir: Path, patient_id: str) -> dict[str, tuple[str, str]]:
    """C-FIND (DCMTK findscu) by Patient ID: Study Instance UID -> (Patient ID, Patient's Name)."""
    workdir.mkdir(parents=True, exist_ok=True)
    args = ["-S", "-aet", aet, "-aec", "ARCHIVE", "-X", "-od", str(workdir)]
    for key in ("QueryRetrieveLevel=STUDY", "StudyInstanceUID", "PatientName", f"PatientID={patient_id}"):
        args += ["-k", key]
    result = dcmtk("findscu", *args, "127.0.0.1", str(cloud.dicom_port))
    assert result.returncode == 0, result.stderr
    answers = [pydicom.dcmread(p) for p in sorted(workdir.glob("rsp*.dcm"))]
    return {str(a.StudyInstanceUID): (str(a.PatientID), str(a.PatientName)) for a in answers}


def get(cloud: LocalCloud, aet: str, workdir: Path, study_uid: str) -> list[Dataset]:
    workdir.mkdir(parents=True, exist_ok=True)
    result = getscu(cloud, aet, study_uid, workdir)
    assert result.returncode == 0, result.stderr
    return [pydicom.dcmread(p) for p in sorted(workdir.iterdir())]


admin = admin_records


def test_another_organisation_changes_only_its_own_studies_of_a_shared_patient(
    cloud: LocalCloud, workdir: Path
) -> None:
    register_b(cloud)
    x, y, z = hetu(), hetu(), hetu()
    # Given hetu X with a study from A and one from B, and hetu Z with a study from A only
    a_study = store(cloud, A_PACS, workdir / "a", x, "Aalto^Anna")
    b_study = store(cloud, B_PACS, workdir / "b", x, "Aalto^Anna")
    z_study = store(cloud, A_PACS, workdir / "z", z, "Zeta^Zoe")
    # When B renames X and then merges X into hetu Y
    rename = adt("A31", x, authority=HETU, name="Bee^Renamed", facility=B_FACILITY, control_id=f"R{x}")
    merge = adt(
        "A40", y, authority=HETU, name="Bee^Merged", prior_id=x, facility=B_FACILITY, control_id=f"M{x}"
    )
    # ... and tries to rename and to merge Z, of which it holds nothing
    z_rename = adt("A31", z, authority=HETU, name="Not^Yours", facility=B_FACILITY, control_id=f"R{z}")
    z_merge = adt("A40", y, authority=HETU, prior_id=z, facility=B_FACILITY, control_id=f"M{z}")
    acks = exchange(cloud.hl7_port, [frame(rename)], expect=1)
    wait_for_change(cloud, PatientIdentity(x, HETU_ISSUER), f"R{x}")
    acks += exchange(cloud.hl7_port, [frame(merge), frame(z_rename), frame(z_merge)], expect=3)
    # Then B's changes to X are accepted, those to Z refused with 204
    assert [(a.code, a.error) for a in acks] == [("AA", None), ("AA", None), ("AE", "204"), ("AE", "204")], [
        a.text for a in acks
    ]
    wait_for_change(cloud, PatientIdentity(y, HETU_ISSUER), f"M{x}")
    # And A's C-FIND by X finds A's study as it was (ID and name), and not B's
    assert find(cloud, A_PACS, workdir / "fa", x) == {a_study: (x, "Aalto^Anna")}
    assert find(cloud, A_PACS, workdir / "fz", z) == {z_study: (z, "Zeta^Zoe")}
    # And A's C-GET returns X and A's name
    for ds in get(cloud, A_PACS, workdir / "ga", a_study):
        assert (ds.PatientID, str(ds.PatientName), ds.IssuerOfPatientID) == (x, "Aalto^Anna", HETU_ISSUER)
    # And B's C-FIND finds its study under Y with the name it sent; X has nothing of B's any more
    assert find(cloud, B_PACS, workdir / "fb", y) == {b_study: (y, "Bee^Merged")}
    assert find(cloud, B_PACS, workdir / "fbx", x) == {}
    for ds in get(cloud, B_PACS, workdir / "gb", b_study):
        assert (ds.PatientID, str(ds.PatientName)) == (y, "Bee^Merged")
    # And X is not merged for anyone: it is A's identity too
    assert cloud.settings is not None
    state = PatientRepository(cloud.settings).get(PatientIdentity(x, HETU_ISSUER).key)
    assert state is not None and state.merged_into is None and state.patient_name == "Aalto^Anna"
    # And the history shows B's changes as applied to B's studies only, and the refusals of Z
    x_history = admin(cloud, "patient", "history", x, "--issuer", HETU_ISSUER)
    assert [(h["event"], h["outcome"], h["org_oid"]) for h in x_history] == [
        ("A31", "APPLIED", B_ORG.oid),
        ("A40", "APPLIED", B_ORG.oid),
    ]
    assert all("studies of" in str(h["reason"]) for h in x_history)

    def z_refusals() -> list[dict[str, object]] | None:
        history = admin(cloud, "patient", "history", z, "--issuer", HETU_ISSUER)
        return history if len(history) == 2 else None

    z_history = wait_until(z_refusals, timeout=60)
    assert [(h["event"], h["outcome"]) for h in z_history] == [("A31", "REFUSED"), ("A40", "REFUSED")]
    assert all("NotControlledBySender" in str(h["reason"]) for h in z_history)
    assert {h["message_control_id"] for h in z_history} == {f"R{z}", f"M{z}"}


def test_a_refusal_before_any_identity_is_recorded_in_the_organisations_log(cloud: LocalCloud) -> None:
    # Given the demo facility, when it sends an identifier with a malformed assigning authority
    pid = fresh_id()
    [ack] = exchange(
        cloud.hl7_port, [frame(adt("A31", pid, authority="&1.2.246.21&L", control_id=f"L{pid}"))], expect=1
    )
    # Then it is refused (AR 103) and the refusal is in the organisation's refusal log
    assert (ack.code, ack.error) == ("AR", "103"), ack.text

    def recorded() -> dict[str, object] | None:
        return next(
            (
                r
                for r in admin(cloud, "patient", "refusals", DEMO_ORG.oid)
                if r["message_control_id"] == f"L{pid}"
            ),
            None,
        )

    refusal = wait_until(recorded, timeout=60)
    assert refusal["outcome"] == "REFUSED" and "UnknownAssigningAuthority" in str(refusal["reason"])
    assert pid in str(refusal["message"])
