"""Given studies in the archive, when HL7 merges identities or renames patients, then C-FIND finds
the studies under the surviving identity, C-GET returns the surviving ID and the current name (in the
right Specific Character Set), later images attach to the survivor, and the stored objects stay
byte for byte as they were."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pydicom
from archive.data.index import IndexRepository
from archive.data.models import Instance, Patient, Study
from archive.data.patients import PatientRepository
from archive.model.identity import PatientIdentity
from pydicom.dataset import Dataset

from local.cloud import LocalCloud
from tests.support.cloud import dcmtk, getscu, s3, storescu, wait_until
from tests.support.dicom import HETU_ISSUER, ct_dataset, new_uid, write
from tests.support.dicom import study as make_study
from tests.support.hl7 import TEMP_ISSUER, adt, exchange, frame, fresh_id, simple_hl7_send, wait_for_change

SCU = "DEMO_PACS"  # the demo organisation's PACS: store, query and retrieve
HETU_AUTHORITY = f"&{HETU_ISSUER}&ISO"


def hetu() -> str:
    """A fresh test hetu-like ID ('9' as 8th character), unique per call."""
    return f"0101{fresh_id('')[:2]}A9{fresh_id('')[:3]}"


def store(cloud: LocalCloud, files: list[Path]) -> str:
    result = storescu(cloud, files, aet=SCU)
    assert result.returncode == 0, result.stderr
    study_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    # generous: indexing is asynchronous and slow on a loaded machine; the bound is not the test
    wait_until(lambda: (s := Study.get(study_uid)) and s.number_of_instances == len(files), timeout=120)
    return study_uid


def study(directory: Path, count: int, **kwargs: Any) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    return make_study(directory, count, **kwargs)


def stored_hashes(cloud: LocalCloud, study_uid: str, files: list[Path]) -> dict[str, str]:
    """SHA-256 of each stored object's bytes as S3 returns them now, by SOP Instance UID."""
    assert cloud.settings is not None and files
    client = s3(cloud)
    out = {}
    for path in files:
        sop = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        instance = Instance.get(sop)
        assert instance.study_uid == study_uid
        body = client.get_object(Bucket=cloud.settings.bucket, Key=instance.s3_key)["Body"].read()
        out[sop] = hashlib.sha256(body).hexdigest()
    return out


def find(cloud: LocalCloud, workdir: Path, *keys: str) -> list[Dataset]:
    workdir.mkdir(parents=True, exist_ok=True)
    args = ["-S", "-aet", SCU, "-aec", "ARCHIVE", "-X", "-od", str(workdir)]
    for key in ("QueryRetrieveLevel=STUDY", "StudyInstanceUID", "PatientName", "IssuerOfPatientID", *keys):
        args += ["-k", key]
    result = dcmtk("findscu", *args, "127.0.0.1", str(cloud.dicom_port))
    assert result.returncode == 0, result.stderr
    return [pydicom.dcmread(p) for p in sorted(workdir.glob("rsp*.dcm"))]


def get(cloud: LocalCloud, workdir: Path, study_uid: str) -> list[Dataset]:
    workdir.mkdir(parents=True, exist_ok=True)
    result = getscu(cloud, SCU, study_uid, workdir)
    assert result.returncode == 0, result.stderr
    return [pydicom.dcmread(p) for p in sorted(workdir.iterdir())]


def test_merge_shows_in_find_and_get_and_stored_objects_stay_unchanged(
    cloud: LocalCloud, workdir: Path
) -> None:
    # Given a two-image study stored under a temporary ID
    temp, pid = fresh_id(), hetu()
    files = study(workdir / "t", 2, patient_id=temp, issuer=TEMP_ISSUER, patient_name="Tilapainen^Potilas")
    study_uid = store(cloud, files)
    before = stored_hashes(cloud, study_uid, files)
    # (the archive stores what it received as a Part-10 file, with the SHA-256 it indexed)
    assert before == {sop: Instance.get(sop).sha256 for sop in before}
    # When the PAS merges the temporary ID into the personal identity code (A40, simple-hl7)
    message = adt(
        "A40",
        pid,
        authority=HETU_AUTHORITY,
        name="Virtanen^Matti",
        prior_id=temp,
        prior_authority="ADT1",
        control_id=f"M{temp}",
    )
    [ack] = simple_hl7_send(cloud, [message], workdir)
    assert ack.code == "AA", ack.text
    wait_for_change(cloud, PatientIdentity(temp, TEMP_ISSUER), f"M{temp}")
    # Then C-FIND by the surviving ID finds the study, with the surviving identity and name
    found = find(cloud, workdir / "find", f"PatientID={pid}")
    assert [
        (str(d.StudyInstanceUID), d.PatientID, d.IssuerOfPatientID, str(d.PatientName)) for d in found
    ] == [(study_uid, pid, HETU_ISSUER, "Virtanen^Matti")]
    # And C-GET returns every image with the surviving identity and the current name
    got = get(cloud, workdir / "get", study_uid)
    assert (
        sorted((d.PatientID, d.IssuerOfPatientID, str(d.PatientName)) for d in got)
        == [(pid, HETU_ISSUER, "Virtanen^Matti")] * 2
    )
    # And the stored objects are byte for byte what was sent (one version each)
    assert stored_hashes(cloud, study_uid, files) == before
    assert cloud.settings is not None
    for path in files:
        key = Instance.get(str(pydicom.dcmread(path).SOPInstanceUID)).s3_key
        versions = s3(cloud).list_object_versions(Bucket=cloud.settings.bucket, Prefix=key)
        assert len(versions.get("Versions", [])) == 1
    # And an image sent later under the temporary ID attaches to the surviving patient
    later = study(
        workdir / "later", 1, patient_id=temp, issuer=TEMP_ISSUER, patient_name="Tilapainen^Potilas"
    )
    later_uid = store(cloud, later)
    assert Study.get(later_uid).patient_key == PatientIdentity(pid, HETU_ISSUER).key
    # And later HL7 for the temporary ID is refused as an unknown key (204)
    [refused] = simple_hl7_send(cloud, [adt("A08", temp, name="Uusi^Nimi")], workdir)
    assert (refused.code, refused.error) == ("AE", "204"), refused.text


def test_finnish_names_reach_dicom_in_the_right_character_set(cloud: LocalCloud, workdir: Path) -> None:
    # Given two patients' studies, stored without a Specific Character Set (plain ASCII)
    latin, utf8 = hetu(), hetu()
    uids = {}
    for pid in (latin, utf8):
        ds = ct_dataset(patient_id=pid, issuer=HETU_ISSUER, patient_name="Vanha^Nimi", study_uid=new_uid())
        del ds.SpecificCharacterSet
        ds.ReferringPhysicianName = "Laakari^Liisa"
        uids[pid] = store(cloud, [write(ds, workdir)])
    # When one is renamed by an A08 in ISO 8859-1 (raw bytes) and the other by an A31 in UTF-8 (simple-hl7)
    latin_name, utf8_name = "Äärelä^Åsa^Öljy", "Šimková^Åsa"
    a08 = adt(
        "A08",
        latin,
        authority=HETU_AUTHORITY,
        name=latin_name,
        charset="8859/1",
        encoding="latin-1",
        control_id=f"L{latin}",
    )
    assert [a.code for a in exchange(cloud.hl7_port, frame(a08), 1)] == ["AA"]
    a31 = adt(
        "A31",
        utf8,
        authority=HETU_AUTHORITY,
        name=utf8_name,
        charset="UNICODE UTF-8",
        encoding="utf-8",
        control_id=f"U{utf8}",
    )
    assert [a.code for a in simple_hl7_send(cloud, [a31], workdir)] == ["AA"]
    wait_for_change(cloud, PatientIdentity(latin, HETU_ISSUER), f"L{latin}")
    wait_for_change(cloud, PatientIdentity(utf8, HETU_ISSUER), f"U{utf8}")
    # Then the index holds each name with the character set it needs
    stored = {pid: Patient.get(PatientIdentity(pid, HETU_ISSUER).key) for pid in (latin, utf8)}
    assert (stored[latin].patient_name, stored[latin].name_charset) == (latin_name, "ISO_IR 100")
    assert (stored[utf8].patient_name, stored[utf8].name_charset) == (utf8_name, "ISO_IR 192")
    # And the images retrieved declare a character set in which the name decodes correctly
    for pid, name in ((latin, latin_name), (utf8, utf8_name)):
        [ds] = get(cloud, workdir / f"get-{pid}", uids[pid])
        assert ds.SpecificCharacterSet in ("ISO_IR 100", "ISO_IR 192")
        assert str(ds.PatientName) == name
        # (the bytes on the wire are the name in the declared set, not just what pydicom made of them)
        codec = {"ISO_IR 100": "latin-1", "ISO_IR 192": "utf-8"}[ds.SpecificCharacterSet]
        [path] = (workdir / f"get-{pid}").iterdir()
        assert name.encode(codec) in path.read_bytes()


def test_merge_cases_users_hit(cloud: LocalCloud, workdir: Path) -> None:
    a, b, c = fresh_id(), fresh_id(), fresh_id()
    a_key = PatientIdentity(a, TEMP_ISSUER).key
    b_key = PatientIdentity(b, TEMP_ISSUER).key
    # Given A merged into B (A has no studies yet), then the same A40 again (same MSH-10: a retry)
    # and again with another MSH-10
    first = adt("A40", b, prior_id=a, name="Korhonen^Liisa", control_id=f"1{a}")
    again = adt("A40", b, prior_id=a, name="Korhonen^Liisa", control_id=f"2{a}")
    acks = simple_hl7_send(cloud, [first, first, again], workdir)
    assert [(x.code, x.error) for x in acks] == [("AA", None)] * 3, [x.text for x in acks]
    wait_for_change(cloud, PatientIdentity(a, TEMP_ISSUER), f"2{a}")
    # When the merge is reversed (B into A), and C is merged with itself
    reverse = adt("A40", a, prior_id=b, control_id=f"3{a}")
    itself = adt("A40", c, prior_id=c, control_id=f"4{a}")
    acks = simple_hl7_send(cloud, [reverse, itself], workdir)
    # Then both are refused: A is a merged ID now (204), and a patient is no merge of itself (207)
    assert [(x.code, x.error) for x in acks] == [("AE", "204"), ("AE", "207")], [x.text for x in acks]
    # And there is no loop: A points at B, B at nothing
    assert Patient.get(a_key).merged_into == b_key
    assert Patient.get(b_key).merged_into is None
    # And the history has the merge once (the retry was deduplicated), the repeat as a no-op, and
    # the reversal the listener refused (recorded asynchronously, through the queue)
    assert cloud.settings is not None
    repository = PatientRepository(cloud.settings)
    history = wait_until(lambda: (h := repository.history(a_key)) and len(h) >= 3 and h, timeout=60)
    assert [(h["message_control_id"], h["outcome"]) for h in history] == [
        (f"1{a}", "APPLIED"),
        (f"2{a}", "UNCHANGED"),
        (f"3{a}", "REFUSED"),
    ]
    assert "PatientMerged" in str(history[2]["reason"])
    # And images of A sent after the merge (A never had any) attach to B, where C-FIND finds them
    files = study(workdir / "a", 1, patient_id=a, issuer=TEMP_ISSUER)
    study_uid = store(cloud, files)
    assert Study.get(study_uid).patient_key == b_key
    found = find(cloud, workdir / "find", f"PatientID={b}")
    assert [(str(d.StudyInstanceUID), d.PatientID, str(d.PatientName)) for d in found] == [
        (study_uid, b, "Korhonen^Liisa")
    ]


def test_a_merge_and_its_reversal_sent_together_make_no_loop(cloud: LocalCloud, workdir: Path) -> None:
    # Given D into E and E into D, sent back to back (the second may be checked before the first
    # is applied, so both may be acknowledged)
    d, e = fresh_id(), fresh_id()
    d_id, e_id = PatientIdentity(d, TEMP_ISSUER), PatientIdentity(e, TEMP_ISSUER)
    messages = [adt("A40", e, prior_id=d, control_id=f"1{d}"), adt("A40", d, prior_id=e, control_id=f"2{d}")]
    acks = simple_hl7_send(cloud, messages, workdir)
    assert acks[0].code == "AA", acks[0].text
    # When the Lambda has handled what was queued
    first = wait_for_change(cloud, e_id, f"1{d}")
    if acks[1].code == "AE":
        # Then either the listener refused the reversal (204) and the first merge is applied
        assert acks[1].error == "204", acks[1].text
        assert first["outcome"] == "APPLIED"
    else:
        # or both were queued: a FIFO queue orders per message group only, and each merge is grouped
        # by the identity it retires (D, then E), so either may reach the Lambda first (the first
        # one's delivery may also fail and be retried after the second): exactly one is applied and
        # the other refused
        second = wait_for_change(cloud, d_id, f"2{d}")
        assert sorted([str(first["outcome"]), str(second["outcome"])]) == ["APPLIED", "REFUSED"]
    # And there is no loop: the index holds exactly the merge that was applied
    survivor, retired = (e_id, d_id) if first["outcome"] == "APPLIED" else (d_id, e_id)
    assert Patient.get(retired.key).merged_into == survivor.key
    assert Patient.get(survivor.key).merged_into is None


def test_a_study_claimed_but_not_yet_indexed_during_a_merge_still_takes_images(
    cloud: LocalCloud, workdir: Path
) -> None:
    assert cloud.settings is not None
    # Given a study the DICOM listener has bound to temporary ID P (first image received, not
    # indexed yet, so no merge can see it by patient)
    p, s = fresh_id(), fresh_id()
    p_key, s_key = PatientIdentity(p, TEMP_ISSUER).key, PatientIdentity(s, TEMP_ISSUER).key
    study_uid = new_uid()
    IndexRepository(cloud.settings).claim_study_patient(study_uid, p_key, "1.2.246.10.12345678.10")
    # When P is merged into S
    [ack] = simple_hl7_send(cloud, [adt("A40", s, prior_id=p, control_id=f"R{p}")], workdir)
    assert ack.code == "AA", ack.text
    wait_for_change(cloud, PatientIdentity(p, TEMP_ISSUER), f"R{p}")
    # Then the study's next image, still sent under P, is stored (no A778) and the study is S's
    files = study(workdir / "r", 1, patient_id=p, issuer=TEMP_ISSUER, study_uid=study_uid)
    store(cloud, files)
    assert Study.get(study_uid).patient_key == s_key
