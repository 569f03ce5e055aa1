"""Retention end to end: rules set with the admin CLI decide each object's Object Lock at the
listener's PUT and each study's retention end (queryable from an index); legal holds put the
objects under S3's legal hold, which S3 enforces against deletion."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from archive.data.models import Study
from archive.data.objects import ObjectStore, instance_key, manifest_key
from archive.data.retention import RetentionRepository
from botocore.exceptions import ClientError

from local.cloud import LocalCloud
from tests.integration.test_corrections import admin, uid
from tests.integration.test_destruction import _registration
from tests.integration.test_query_retrieve import customer, hetu, store_study, sub
from tests.integration.test_retention_death import _job_done
from tests.support.cloud import json_lines, s3, storescu, wait_until
from tests.support.dicom import HETU_ISSUER, study


def _retention(cloud: LocalCloud, path: Path) -> tuple[str, datetime]:
    assert cloud.settings is not None
    lock = ObjectStore(cloud.settings).retention(instance_key(uid(path)))
    assert lock is not None
    return lock.mode, lock.retain_until


def test_rules_set_object_lock_at_store_and_study_retention_end_never_shortens(
    cloud: LocalCloud, workdir: Path
) -> None:
    # Given a 10-year rule for any study and a 20-year rule for MR of a customer
    c = customer(cloud)
    assert admin(cloud, "retention", "rule", "set", c.org.oid, "*", "--years", "10").returncode == 0
    assert admin(cloud, "retention", "rule", "set", c.org.oid, "MR", "--years", "20").returncode == 0
    # When a CT study from 15 January 2026 is stored
    ct = study(sub(workdir, "ct"), 1, patient_id=hetu(), study_date="20260115")
    study_uid = store_study(cloud, c, ct)
    # Then its object is locked until 15 January 2036 (GOVERNANCE locally, COMPLIANCE on AWS)
    assert _retention(cloud, ct[0]) == ("GOVERNANCE", datetime(2036, 1, 15, tzinfo=UTC))
    shown = json.loads(admin(cloud, "retention", "show", study_uid).stdout)
    assert shown["retention_end"] == "2036-01-15 00:00:00+00:00"
    # When an MR instance joins the study, the study's end grows to 2046
    mr = study(
        sub(workdir, "mr"), 1, patient_id=_patient_id(ct[0]), study_uid=study_uid, study_date="20260115",
        modality="MR",
    )  # fmt: skip
    store_study(cloud, c, ct + mr)
    assert _retention(cloud, mr[0])[1] == datetime(2046, 1, 15, tzinfo=UTC)
    assert Study.get(study_uid).retention_end == "2046-01-15T00:00:00+00:00"
    # And when another CT instance (10 years) arrives after the MR, the study's end stays 2046
    ct2 = study(
        sub(workdir, "ct2"), 1, patient_id=_patient_id(ct[0]), study_uid=study_uid, study_date="20260115"
    )
    store_study(cloud, c, ct + mr + ct2)
    assert _retention(cloud, ct2[0])[1] == datetime(2036, 1, 15, tzinfo=UTC)
    assert Study.get(study_uid).retention_end == "2046-01-15T00:00:00+00:00"
    # (another listener process, not knowing the study, cannot shorten it either: a conditional write)
    assert RetentionRepository().extend_study(study_uid, datetime(2031, 1, 1, tzinfo=UTC)) is False
    assert Study.get(study_uid).retention_end == "2046-01-15T00:00:00+00:00"


def _patient_id(path: Path) -> str:
    import pydicom

    return str(pydicom.dcmread(path, stop_before_pixels=True).PatientID)


def test_due_studies_come_from_the_retention_index(cloud: LocalCloud, workdir: Path) -> None:
    # Given a one-day rule, a study from 2000 (its retention ended long ago) and one from today
    c = customer(cloud)
    assert admin(cloud, "retention", "rule", "set", c.org.oid, "*", "--days", "1").returncode == 0
    old = store_study(cloud, c, study(sub(workdir, "old"), 1, patient_id=hetu(), study_date="20000101"))
    today = datetime.now(UTC).strftime("%Y%m%d")
    new = store_study(cloud, c, study(sub(workdir, "new"), 1, patient_id=hetu(), study_date=today))
    # When the operator asks which studies are due
    due = admin(cloud, "retention", "due")
    assert due.returncode == 0, due.stderr
    listed = {record["study_uid"]: record["retention_end"] for record in json_lines(due.stdout)}
    # Then the old study is due (ended 2 January 2000), today's is not
    assert listed[old] == "2000-01-02T00:00:00+00:00"
    assert new not in listed


def test_legal_hold_puts_objects_under_s3_legal_hold_until_released(cloud: LocalCloud, workdir: Path) -> None:
    # Given a stored study
    c = customer(cloud)
    files = study(sub(workdir, "s"), 2, patient_id=hetu())
    study_uid = store_study(cloud, c, files)
    bucket = cloud.settings.bucket  # type: ignore[union-attr]
    # When a legal hold is placed on it, with who and why
    placed = admin(
        cloud, "hold", "place", "--study", study_uid, "--by", "Lawyer Liisa", "--reason", "case 7/2026"
    )
    assert placed.returncode == 0, placed.stderr
    hold = json.loads(placed.stdout)
    assert hold["objects_held"] == 2
    # Then S3 has every object version on legal hold and refuses to delete it, even bypassing governance
    for path in files:
        key = instance_key(uid(path))
        assert s3(cloud).get_object_legal_hold(Bucket=bucket, Key=key)["LegalHold"]["Status"] == "ON"
        version = s3(cloud).head_object(Bucket=bucket, Key=key)["VersionId"]
        with pytest.raises(ClientError):
            s3(cloud).delete_object(Bucket=bucket, Key=key, VersionId=version, BypassGovernanceRetention=True)
    listed = json_lines(admin(cloud, "hold", "list", "--study", study_uid).stdout)
    assert [(h["placed_by"], h["reason"], h["released_at"]) for h in listed] == [
        ("Lawyer Liisa", "case 7/2026", None)
    ]
    assert Study.get(study_uid).legal_holds == 1
    # When it is released, the objects leave the legal hold (their retention still applies)
    released = admin(cloud, "hold", "release", hold["hold_id"], "--study", study_uid, "--by", "Lawyer Liisa")
    assert released.returncode == 0, released.stderr
    assert json.loads(released.stdout)["objects_released"] == 2
    key = instance_key(uid(files[0]))
    assert s3(cloud).get_object_legal_hold(Bucket=bucket, Key=key)["LegalHold"]["Status"] == "OFF"
    assert Study.get(study_uid).legal_holds == 0


def test_objects_stored_after_a_patient_hold_is_placed_are_held_from_their_put(
    cloud: LocalCloud, workdir: Path
) -> None:
    assert cloud.settings is not None
    bucket = cloud.settings.bucket
    # Given a customer's patient with a study, and a legal hold on the patient
    c = customer(cloud)
    pid = hetu()
    first = study(sub(workdir, "first"), 1, patient_id=pid)
    store_study(cloud, c, first)
    placed = admin(
        cloud, "hold", "place", "--patient", pid, "--issuer", HETU_ISSUER, "--by", "Lawyer L", "--reason", "x"
    )
    assert placed.returncode == 0, placed.stderr
    # When a new study of the patient is stored, and one of another patient
    later = study(sub(workdir, "later"), 2, patient_id=pid)
    store_study(cloud, c, later)
    other = study(sub(workdir, "other"), 1, patient_id=hetu())
    store_study(cloud, c, other)
    # Then every object of the new study is on S3 legal hold from its PUT, the other patient's not
    for path in later:
        status = s3(cloud).get_object_legal_hold(Bucket=bucket, Key=instance_key(uid(path)))["LegalHold"]
        assert status["Status"] == "ON"
    assert not ObjectStore(cloud.settings).legal_hold(instance_key(uid(other[0])))
    # And S3 refuses to delete a held version even with governance bypass
    key = instance_key(uid(later[0]))
    version = s3(cloud).head_object(Bucket=bucket, Key=key)["VersionId"]
    with pytest.raises(ClientError):
        s3(cloud).delete_object(Bucket=bucket, Key=key, VersionId=version, BypassGovernanceRetention=True)


def test_a_grown_rule_lengthens_the_locks_of_stored_objects_and_a_shorter_one_changes_nothing(
    cloud: LocalCloud, workdir: Path
) -> None:
    # Given a customer's 30-day rules for any study and for MR, and a CT and an MR study (dated
    # in 2030, so that their locks are the rule's, not the minimum)
    c = customer(cloud)
    for study_type in ("*", "MR"):
        assert admin(cloud, "retention", "rule", "set", c.org.oid, study_type, "--days", "30").returncode == 0
    ct = study(sub(workdir, "ct"), 2, patient_id=hetu(), study_date="20300115")
    ct_uid = store_study(cloud, c, ct)
    mr = study(sub(workdir, "mr"), 1, patient_id=hetu(), study_date="20300115", modality="MR")
    store_study(cloud, c, mr)
    assert {_retention(cloud, p)[1] for p in ct + mr} == {datetime(2030, 2, 14, tzinfo=UTC)}
    # When the rule for any study grows to 400 days
    grown = admin(cloud, "retention", "rule", "set", c.org.oid, "*", "--days", "400")
    assert grown.returncode == 0, grown.stderr
    # Then every CT object's retain-until and the study's retention end are 400 days from its date
    job = _job_done(cloud, json.loads(grown.stdout)["job_id"])
    assert (job["studies"], job["objects_extended"]) == (2, 2)
    assert {_retention(cloud, p)[1] for p in ct} == {datetime(2031, 2, 19, tzinfo=UTC)}
    assert Study.get(ct_uid).retention_end == "2031-02-19T00:00:00+00:00"
    # And the MR object, under its own rule, keeps its lock
    assert _retention(cloud, mr[0])[1] == datetime(2030, 2, 14, tzinfo=UTC)
    # When the rule is set again, or shortened, nothing changes (never shortened; resumable, idempotent)
    again = admin(cloud, "retention", "rule", "set", c.org.oid, "*", "--days", "400")
    job = _job_done(cloud, json.loads(again.stdout)["job_id"])
    assert (job["studies"], job["objects_extended"]) == (2, 0)
    shorter = admin(cloud, "retention", "rule", "set", c.org.oid, "*", "--days", "10")
    assert _job_done(cloud, json.loads(shorter.stdout)["job_id"])["objects_extended"] == 0
    assert {_retention(cloud, p)[1] for p in ct} == {datetime(2031, 2, 19, tzinfo=UTC)}
    assert Study.get(ct_uid).retention_end == "2031-02-19T00:00:00+00:00"


def test_an_object_stored_just_after_a_hold_was_placed_ends_up_held(cloud: LocalCloud, workdir: Path) -> None:
    assert cloud.settings is not None
    bucket = cloud.settings.bucket
    # Given a stored study (the listener now knows it as not held, for a minute)
    c = customer(cloud)
    pid = hetu()
    files = study(sub(workdir, "first"), 1, patient_id=pid)
    study_uid = store_study(cloud, c, files)
    # When a legal hold is placed on it and another instance of it is stored at once
    placed = admin(cloud, "hold", "place", "--study", study_uid, "--by", "Lawyer L", "--reason", "case 8")
    assert placed.returncode == 0, placed.stderr
    later = study(sub(workdir, "later"), 1, patient_id=pid, study_uid=study_uid)
    assert storescu(cloud, later, aet=c.scu).returncode == 0
    # Then the new object ends up under S3's legal hold (set by the indexer, which reads the
    # study's hold count, if the listener's cached answer missed it at the PUT)
    key = instance_key(uid(later[0]))

    def held() -> bool:
        try:
            return s3(cloud).get_object_legal_hold(Bucket=bucket, Key=key)["LegalHold"].get("Status") == "ON"
        except ClientError:
            return False  # not in the locked bucket yet

    wait_until(held, timeout=60)
    # And S3 refuses to delete it even with governance bypass
    version = s3(cloud).head_object(Bucket=bucket, Key=key)["VersionId"]
    with pytest.raises(ClientError):
        s3(cloud).delete_object(Bucket=bucket, Key=key, VersionId=version, BypassGovernanceRetention=True)


def test_a_studys_manifest_grows_and_is_held_with_its_instances(cloud: LocalCloud, workdir: Path) -> None:
    assert cloud.settings is not None
    objects = ObjectStore(cloud.settings)
    # Given a customer that registers its studies, a 30-day rule, and a study dated 2030, registered
    c = customer(cloud)
    cloud.configure_registration(c.org.oid, stability_seconds=1.0, register_uncommitted=True)
    assert admin(cloud, "retention", "rule", "set", c.org.oid, "*", "--days", "30").returncode == 0
    files = study(sub(workdir, "reg"), 1, patient_id=hetu(), study_date="20300115")
    study_uid = store_study(cloud, c, files)
    manifest = manifest_key(str(wait_until(lambda: _registration(study_uid), timeout=90).manifest_uid))
    lock = objects.retention(manifest)
    assert lock is not None and lock.retain_until == datetime(2030, 2, 14, tzinfo=UTC)
    # When the rule grows to 400 days
    grown = admin(cloud, "retention", "rule", "set", c.org.oid, "*", "--days", "400")
    assert grown.returncode == 0, grown.stderr
    job = _job_done(cloud, json.loads(grown.stdout)["job_id"])
    # Then the manifest's lock grows with the instance's (both counted by the job)
    assert (job["studies"], job["objects_extended"]) == (1, 2)
    assert _retention(cloud, files[0])[1] == datetime(2031, 2, 19, tzinfo=UTC)
    lock = objects.retention(manifest)
    assert lock is not None and lock.retain_until == datetime(2031, 2, 19, tzinfo=UTC)
    # When a legal hold is placed on the study, S3 holds the manifest too; released, it lets go
    placed = admin(
        cloud, "hold", "place", "--study", study_uid, "--by", "Lawyer L.", "--reason", "case 9/2026"
    )
    assert placed.returncode == 0, placed.stderr
    assert json.loads(placed.stdout)["objects_held"] == 2
    assert objects.legal_hold(manifest) and objects.legal_hold(instance_key(uid(files[0])))
    hold_id = json.loads(placed.stdout)["hold_id"]
    released = admin(cloud, "hold", "release", hold_id, "--study", study_uid, "--by", "Lawyer L.")
    assert released.returncode == 0, released.stderr
    assert not objects.legal_hold(manifest) and not objects.legal_hold(instance_key(uid(files[0])))
