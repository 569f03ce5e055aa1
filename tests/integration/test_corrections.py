"""IHE IOCM corrections end to end: rejection notes written by highdicom (and edited with DCMTK
dcmodify) sent by DCMTK storescu; their statuses, and their effect on C-FIND, C-MOVE, C-GET,
storage commitment and a re-send; the operator's revoke with the admin CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pydicom
from archive.data.models import Instance, Rejection, Study
from archive.data.objects import instance_key
from archive.model.organisations import AEInfo, OrganisationInfo
from pynetdicom.sop_class import CTImageStorage, MRImageStorage  # type: ignore[attr-defined]

from local.cloud import LocalCloud, free_port
from tests.integration.test_query_retrieve import Receiver, customer, findscu, hetu, store_study, sub
from tests.support.audit import wait_for_record
from tests.support.cloud import admin_cli, dcmtk, getscu, json_lines, movescu, s3
from tests.support.dicom import HETU_ISSUER, study
from tests.support.rejection import rejection_note, write_note
from tests.support.scu import Modality, action_information

STATUS = re.compile(r"Status\s*:\s*0x([0-9a-fA-F]{4})")


def store_status(cloud: LocalCloud, path: Path, aet: str) -> int:
    """The C-STORE status DCMTK storescu received for one file (from its debug dump)."""
    result = dcmtk(
        "storescu", "-d", "-aet", aet, "-aec", "ARCHIVE", "127.0.0.1", str(cloud.dicom_port), str(path)
    )
    statuses = STATUS.findall(result.stdout + result.stderr)
    assert statuses, result.stdout + result.stderr
    return int(statuses[-1], 16)


admin = admin_cli


def image_uids(cloud: LocalCloud, aet: str, outdir: Path, study_uid: str) -> set[str]:
    result, responses = findscu(
        cloud, aet, outdir, "QueryRetrieveLevel=IMAGE", f"StudyInstanceUID={study_uid}", "SOPInstanceUID"
    )
    assert result.returncode == 0, result.stderr
    return {str(r.SOPInstanceUID) for r in responses}


def uid(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def test_rejected_instances_vanish_from_find_move_get_and_commitment_until_revoked(
    cloud: LocalCloud, workdir: Path
) -> None:
    # Given a study of three instances stored by a customer
    c = customer(cloud, roles=("store", "query", "retrieve", "commitment"))
    files = study(sub(workdir, "s"), 3, patient_id=hetu())
    study_uid = store_study(cloud, c, files)
    rejected, kept = files[:2], files[2]
    # When the customer sends a rejection note (quality reasons) for two of them with storescu
    note = write_note(rejection_note(rejected, "113001"), workdir)
    assert store_status(cloud, note, c.scu) == 0x0000
    # Then C-FIND shows only the third instance, and the study counts one instance
    assert image_uids(cloud, c.scu, sub(workdir, "f1"), study_uid) == {uid(kept)}
    _, studies = findscu(
        cloud, c.scu, sub(workdir, "f2"), "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={study_uid}",
        "NumberOfStudyRelatedInstances",
    )  # fmt: skip
    assert [int(s.NumberOfStudyRelatedInstances) for s in studies] == [1]
    # And C-GET and C-MOVE deliver only the third
    got = sub(workdir, "got")
    assert getscu(cloud, c.scu, study_uid, got).returncode == 0
    assert {uid(p) for p in got.iterdir()} == {uid(kept)}
    with Receiver(c.dest_port, c.dest) as receiver:
        assert movescu(cloud, c.scu, c.dest, study_uid).returncode == 0
    assert [str(d.SOPInstanceUID) for d in receiver.datasets] == [uid(kept)]
    # And storage commitment fails the rejected instances (no such instance) and commits the other
    modality = Modality(cloud.dicom_port, ae_title=c.scu)
    try:
        refs = [(CTImageStorage, uid(p)) for p in files]
        assert modality.request_commitment(action_information(refs)) == 0
        report = modality.wait_report(timeout=60)
    finally:
        modality.release()
    assert report.event_type == 2
    assert {str(i.ReferencedSOPInstanceUID) for i in report.info.FailedSOPSequence} == {
        uid(p) for p in rejected
    }
    assert {int(i.FailureReason) for i in report.info.FailedSOPSequence} == {0x0112}
    assert [str(i.ReferencedSOPInstanceUID) for i in report.info.ReferencedSOPSequence] == [uid(kept)]
    # And the original bytes stay in the bucket; the operator sees what is rejected and by which note
    for path in rejected:
        head = s3(cloud).head_object(Bucket=cloud.settings.bucket, Key=instance_key(uid(path)))  # type: ignore[union-attr]
        assert head["ContentLength"] > 0
    listed = admin(cloud, "rejection", "list", "--study", study_uid)
    assert listed.returncode == 0, listed.stderr
    hidden = json_lines(listed.stdout)
    assert {h["sop_instance_uid"] for h in hidden} == {uid(p) for p in rejected}
    assert {(h["code"], h["note_uid"]) for h in hidden} == {("113001", uid(note))}
    # And the rejection is audited: 110103 Instances Accessed, D, the study, both instances, the AE
    record, message = wait_for_record(
        cloud, lambda r, doc: r["event"] == "110103" and r["action"] == "D" and uid(note) in r["xml"]
    )
    assert record["outcome"] == 0 and record["requestors"] == [c.scu]
    (rejected_study,) = [
        o
        for o in message.iter("ParticipantObjectIdentification")
        if o.get("ParticipantObjectID") == study_uid
    ]
    assert rejected_study.get("ParticipantObjectDataLifeCycle") == "14"
    assert {i.get("UID") for i in rejected_study.iter("Instance")} == {uid(p) for p in rejected}

    # When a rejected instance is sent again, the same note again, or a new note for a rejected one
    # Then A771, A770 and A774, and nothing changes
    assert store_status(cloud, rejected[0], c.scu) == 0xA771
    assert store_status(cloud, note, c.scu) == 0xA770
    again = write_note(rejection_note([rejected[1]], "113037"), workdir)
    assert store_status(cloud, again, c.scu) == 0xA774
    assert image_uids(cloud, c.scu, sub(workdir, "f3"), study_uid) == {uid(kept)}
    # And a refused note is audited as a failed deletion
    wait_for_record(
        cloud,
        lambda r, doc: r["event"] == "110103" and r["outcome"] == 4 and "DuplicateRejectionNote" in r["xml"]
        and uid(note) in r["xml"],
    )  # fmt: skip

    # When an operator revokes the rejection with the admin CLI
    revoked = admin(cloud, "rejection", "revoke", uid(note), "--by", "Operator Olli", "--reason", "ticket 42")
    assert revoked.returncode == 0, revoked.stderr
    assert json.loads(revoked.stdout) == {"note_uid": uid(note), "restored": 2, "state": "REVOKED"}
    # Then all three instances are back, the study counts three, and the record keeps who and why
    assert image_uids(cloud, c.scu, sub(workdir, "f4"), study_uid) == {uid(p) for p in files}
    assert Study.get(study_uid).number_of_instances == 3
    shown = json.loads(admin(cloud, "rejection", "show", uid(note)).stdout)
    assert (shown["state"], shown["revoked_by"], shown["revoke_reason"]) == (
        "REVOKED",
        "Operator Olli",
        "ticket 42",
    )
    # And the revoke is audited (110103, U) with the operator and the instances shown again
    record, message = wait_for_record(
        cloud, lambda r, doc: r["event"] == "110103" and r["action"] == "U" and uid(note) in r["xml"]
    )
    assert record["requestors"] == ["Operator Olli"] and "ticket 42" in record["xml"]
    assert {i.get("UID") for i in message.iter("Instance")} == {uid(p) for p in rejected}


def test_rejection_codes_and_refusals(cloud: LocalCloud, workdir: Path) -> None:
    # Given a study of four instances stored by a customer
    c = customer(cloud, roles=("store", "query"))
    files = study(sub(workdir, "s"), 4, patient_id=hetu())
    study_uid = store_study(cloud, c, files)

    # A note naming an instance the archive does not hold: A772, and nothing is rejected
    missing = study(sub(workdir, "m"), 1, patient_id=hetu(), study_uid=study_uid)
    note = write_note(rejection_note([files[0], missing[0]]), workdir)
    assert store_status(cloud, note, c.scu) == 0xA772
    # A note naming an instance with another SOP Class (edited with DCMTK dcmodify): A773
    note = write_note(rejection_note([files[0]]), workdir)
    item = "(0040,a375)[0].(0008,1115)[0].(0008,1199)[0].(0008,1150)"
    dcmtk("dcmodify", "-nb", "-m", f"{item}={MRImageStorage}", str(note), check=True)
    assert store_status(cloud, note, c.scu) == 0xA773
    # A 113039 (retention expired) note where no rule allows early destruction: A775
    note = write_note(rejection_note([files[0]], "113039"), workdir)
    assert store_status(cloud, note, c.scu) == 0xA775
    # A note from another organisation (which trusts the same issuer): 0124 Refused, not authorised
    other = OrganisationInfo(
        "1.2.246.10.99999999.10", "Other clinic", trusted_issuers=(HETU_ISSUER,), default_issuer=HETU_ISSUER
    )
    cloud.register(other, AEInfo("OTHER_MOD", other.oid, "127.0.0.1", free_port(), roles=("store",)))
    note = write_note(rejection_note([files[0]]), workdir)
    assert store_status(cloud, note, "OTHER_MOD") == 0x0124
    assert Rejection.count(uid(note)) == 0
    assert all(not i.rejected for i in Instance.by_study.query(study_uid))

    # The other two titles are accepted, each with its code on the instance it rejects
    for path, code in ((files[1], "113037"), (files[2], "113038")):
        note = write_note(rejection_note([path], code), workdir)
        assert store_status(cloud, note, c.scu) == 0x0000
    hidden = {i.sop_instance_uid: i.rejected for i in Instance.by_study.query(study_uid) if i.rejected}
    assert hidden == {uid(files[1]): "113037", uid(files[2]): "113038"}
    assert image_uids(cloud, c.scu, sub(workdir, "f"), study_uid) == {uid(files[0]), uid(files[3])}


def test_study_whose_every_instance_is_rejected_disappears_from_find(
    cloud: LocalCloud, workdir: Path
) -> None:
    # Given a study of two instances, both rejected (wrong worklist entry)
    c = customer(cloud, roles=("store", "query"))
    pid = hetu()
    files = study(sub(workdir, "s"), 2, patient_id=pid)
    study_uid = store_study(cloud, c, files)
    assert store_status(cloud, write_note(rejection_note(files, "113038"), workdir), c.scu) == 0x0000
    # When the customer looks for the patient's studies
    result, responses = findscu(
        cloud, c.scu, sub(workdir, "f"), "QueryRetrieveLevel=STUDY", f"PatientID={pid}", "StudyInstanceUID"
    )
    # Then the study is not there (its index entry stays, with its instances hidden)
    assert result.returncode == 0, result.stderr
    assert responses == []
    stored = Study.get(study_uid)
    assert (stored.number_of_instances, stored.rejected_instances) == (0, 2)
