"""Lawful destruction end to end: the scheduled job (run on demand by the local runner) destroys
due studies found through the retention-end index, leaves held and still-locked ones whole, and
records every destroyed object's SHA-256. S3 refuses any early delete of what the archive wrote."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pydicom
import pytest
from archive.data.audit_store import AuditBucket
from archive.data.destruction import DestructionRepository
from archive.data.facilities import FacilityRepository
from archive.data.models import Instance, Registration, Study
from archive.data.objects import ObjectStore, instance_key, manifest_key
from archive.data.rejections import rejection_note_key
from archive.data.retention import RetentionRepository
from archive.data.xds_registry import XdsRegistry
from archive.errors import RetentionLocked
from archive.model.identity import PatientIdentity
from archive.model.organisations import AEInfo, FacilityInfo, OrganisationInfo
from archive.model.registration import STUDY_UID_REFERENCE
from archive.model.xds import EntryStatus
from botocore.exceptions import ClientError
from pynamodb.exceptions import DoesNotExist

from local.cloud import LocalCloud, free_port
from tests.integration.test_corrections import admin, store_status, uid
from tests.integration.test_query_retrieve import Customer, customer, hetu, store_study, sub
from tests.support.audit import wait_for_record
from tests.support.cloud import s3, storescu, wait_until
from tests.support.dicom import HETU_ISSUER, new_uid, study
from tests.support.hl7 import TEMP_ISSUER, adt, fresh_id, simple_hl7_send, wait_for_change
from tests.support.rejection import rejection_note, write_note


def test_destruction_job_destroys_due_studies_but_not_held_or_locked_ones(
    cloud: LocalCloud, workdir: Path
) -> None:
    assert cloud.settings is not None
    objects = ObjectStore(cloud.settings)
    # Given a one-day rule, and two studies from 2000 (retention ended), one of them on legal hold
    c = customer(cloud)
    assert admin(cloud, "retention", "rule", "set", c.org.oid, "*", "--days", "1").returncode == 0
    due_files = study(sub(workdir, "due"), 2, patient_id=hetu(), study_date="20000101")
    due = store_study(cloud, c, due_files)
    held = store_study(cloud, c, study(sub(workdir, "held"), 1, patient_id=hetu(), study_date="20000101"))
    assert (
        admin(cloud, "hold", "place", "--study", held, "--by", "Lawyer", "--reason", "case").returncode == 0
    )
    # And a study of a customer without rules (bucket default lock, one day), registered (its
    # manifest is locked like its instance), marked due by hand
    other = customer(cloud)
    cloud.configure_registration(other.org.oid, stability_seconds=1.0, register_uncommitted=True)
    locked_files = study(sub(workdir, "locked"), 1, patient_id=hetu(), study_date="20000101")
    locked = store_study(cloud, other, locked_files)
    assert RetentionRepository().extend_study(locked, datetime(2000, 1, 2, tzinfo=UTC))
    manifest = manifest_key(str(wait_until(lambda: _registration(locked), timeout=90).manifest_uid))
    # And a rejection note in that study (the other object type the archive writes)
    note = write_note(rejection_note(locked_files), workdir)
    assert store_status(cloud, note, other.scu) == 0x0000

    # Then no request can delete them early: S3 refuses every version of an instance, a manifest
    # and a note
    for key in (instance_key(uid(locked_files[0])), manifest, rejection_note_key(uid(note))):
        assert objects.versions_of(key)
        for version in objects.versions_of(key):
            with pytest.raises(RetentionLocked):
                objects.delete_version(key, version)
    # And of the audit log's batches (in the audit bucket)
    audit_bucket = cloud.settings.audit_bucket
    log_key = AuditBucket(cloud.settings).keys()[0]
    log_version = s3(cloud).list_object_versions(Bucket=audit_bucket, Prefix=log_key)["Versions"][0]
    with pytest.raises(ClientError):
        s3(cloud).delete_object(Bucket=audit_bucket, Key=log_key, VersionId=log_version["VersionId"])

    # When the minimum lock of the due studies has run out and the scheduled job runs
    key = instance_key(uid(due_files[0]))
    wait_until(lambda: datetime.now(UTC) > objects.retention(key).retain_until, timeout=30)  # type: ignore[union-attr]
    stored_sha = {objects.head(instance_key(uid(p))).sha256 for p in due_files}  # type: ignore[union-attr]
    run = cloud.run_scheduled("destroy_expired", {"approved_by": "Archivist Aino"})

    # Then the due study is destroyed: every object version, its index entries
    assert due in run["destroyed"]
    for path in due_files:
        assert objects.versions_of(instance_key(uid(path))) == []
        with pytest.raises(DoesNotExist):
            Instance.get(uid(path))
    with pytest.raises(DoesNotExist):
        Study.get(due)
    # And its record says what (each object's SHA-256), under which retention end, when, approved by whom
    (record,) = DestructionRepository().records_of(due)
    assert record.instance_count == 2 and record.approved_by == "Archivist Aino"
    assert record.retention_end == datetime(2000, 1, 2, tzinfo=UTC)
    assert {o.sha256 for o in record.objects} == stored_sha  # as S3 verified them at store
    assert all(o.versions for o in record.objects)
    # And the held study and the still-locked one are whole
    assert held in run["held"] and locked in run["locked"]
    assert Study.get(held).number_of_instances == 1
    assert Study.get(locked).rejected_instances == 1  # (its one instance was rejected by the note)
    assert Instance.get(uid(locked_files[0])).rejected == "113001"
    assert objects.versions_of(instance_key(uid(locked_files[0])))
    # And "due" no longer lists the destroyed study
    assert due not in admin(cloud, "retention", "due").stdout
    # And the destruction is audited: 110103, D, the study with its instance count, who approved it
    record, message = wait_for_record(
        cloud, lambda r, doc: r["event"] == "110103" and r["action"] == "D" and due in r["xml"]
    )
    assert record["outcome"] == 0 and record["requestors"] == ["Archivist Aino"]
    (destroyed,) = [
        o for o in message.iter("ParticipantObjectIdentification") if o.get("ParticipantObjectID") == due
    ]
    assert destroyed.get("ParticipantObjectDataLifeCycle") == "15"
    assert [c.get("NumberOfInstances") for c in destroyed.iter("SOPClass")] == ["2"]
    patient_id = str(pydicom.dcmread(due_files[0], stop_before_pixels=True).PatientID)
    assert [o.get("ParticipantObjectID") for o in message.iter("ParticipantObjectIdentification")][
        -1
    ].startswith(f"{patient_id}^^^")
    # And the refused destruction of the locked study is audited as a failed Delete (outcome 4),
    # nothing of it was deleted, and the next run tries it again
    # (the note's own 110103 D record, outcome 0, is about the same study; the assertions below say
    # which of them this is)
    refused, message = wait_for_record(
        cloud,
        lambda r, doc: (
            r["event"] == "110103" and r["action"] == "D" and r["outcome"] != 0 and locked in r["xml"]
        ),
    )
    assert refused["outcome"] == 4
    assert "refused by S3 Object Lock" in (message.findtext(".//EventOutcomeDescription") or "")
    (erased,) = [
        o for o in message.iter("ParticipantObjectIdentification") if o.get("ParticipantObjectID") == locked
    ]
    assert erased.get("ParticipantObjectDataLifeCycle") == "15"
    assert DestructionRepository().records_of(locked) == []
    assert objects.versions_of(rejection_note_key(uid(note)))
    assert locked in cloud.run_scheduled("destroy_expired", {})["locked"]
    assert Study.get(locked).number_of_instances == 0 and Study.get(locked).rejected_instances == 1


def test_113039_rejection_asks_for_early_destruction_only_where_the_rule_allows_it(
    cloud: LocalCloud, workdir: Path
) -> None:
    assert cloud.settings is not None
    objects = ObjectStore(cloud.settings)

    def customer_with_rule(*options: str) -> tuple[Customer, list[Path], str]:
        c = customer(cloud)
        result = admin(cloud, "retention", "rule", "set", c.org.oid, "*", "--days", "3650", *options)
        assert result.returncode == 0, result.stderr
        files = study(sub(workdir, c.scu), 2, patient_id=hetu())
        return c, files, store_study(cloud, c, files)

    # Given a rule that forbids 113039 rejections: the note is refused with A775
    c, files, _ = customer_with_rule("--expiry-rejection", "NEVER")
    assert store_status(cloud, write_note(rejection_note(files, "113039"), workdir), c.scu) == 0xA775
    # Given a rule that allows them once the retention has ended (ten years from now): A776
    c, files, kept = customer_with_rule("--expiry-rejection", "EXPIRED")
    assert store_status(cloud, write_note(rejection_note(files, "113039"), workdir), c.scu) == 0xA776
    assert all(not i.rejected for i in Instance.by_study.query(kept))

    # Given a rule that allows early destruction (no minimum: S3 locks the archive's minimum only)
    c, files, early = customer_with_rule("--expiry-rejection", "EARLY")
    lock = objects.retention(instance_key(uid(files[0])))
    assert lock is not None and lock.retain_until < datetime(2030, 1, 1, tzinfo=UTC)
    # When the customer sends a 113039 note for the whole study
    note = write_note(rejection_note(files, "113039"), workdir)
    assert store_status(cloud, note, c.scu) == 0x0000
    # Then the study is due now, with the note recorded on it
    shown = admin(cloud, "retention", "show", early)
    assert shown.returncode == 0, shown.stderr
    assert f'"early_destruction_note": "{uid(note)}"' in shown.stdout
    assert early in admin(cloud, "retention", "due").stdout
    # And once its minimum lock has run out the destruction job destroys it, naming the note
    wait_until(
        lambda: datetime.now(UTC) > objects.retention(instance_key(uid(files[-1]))).retain_until, timeout=30
    )  # type: ignore[union-attr]
    run = cloud.run_scheduled("destroy_expired", {"approved_by": "Archivist Aino"})
    assert early in run["destroyed"] and kept not in run["destroyed"]
    (record,) = DestructionRepository().records_of(early)
    assert record.rejection_note == uid(note) and record.instance_count == 2
    for path in files:
        assert objects.versions_of(instance_key(uid(path))) == []


def test_destruction_deprecates_the_studys_registry_entries_and_removes_them_after_the_delay(
    cloud: LocalCloud, workdir: Path
) -> None:
    assert cloud.settings is not None
    registry = XdsRegistry(cloud.settings)
    objects = ObjectStore(cloud.settings)
    # Given an organisation that registers its studies (uncommitted ones too) under a one-day rule
    oid = f"1.2.246.10.{int(new_uid().rsplit('.', 1)[1]) % 10**8}.10"
    cloud.register(
        OrganisationInfo(oid, "Registering Clinic", trusted_issuers=(HETU_ISSUER,)),
        AEInfo("DESTROY_MOD", oid, "127.0.0.1", free_port(), roles=("store",)),
    )
    cloud.configure_registration(oid, stability_seconds=1.0, register_uncommitted=True)
    assert admin(cloud, "retention", "rule", "set", oid, "*", "--days", "1").returncode == 0
    # And a study from 2000 of it, registered in the XDS registry
    pid = hetu()
    files = study(sub(workdir, "s"), 2, patient_id=pid, study_date="20000101")
    assert storescu(cloud, files, aet="DESTROY_MOD").returncode == 0
    study_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    registered = wait_until(lambda: _registration(study_uid), timeout=90)
    entry_uuid = str(registered.entry_uuid)
    [entry] = registry.documents_by_uuid([entry_uuid])
    assert entry.status is EntryStatus.APPROVED
    cx = f"{pid}^^^&{HETU_ISSUER}&ISO"

    # When the minimum locks have run out (the instances' and the manifest's, which is written at
    # registration, after the instances) and the destruction job runs
    keys = [*(instance_key(uid(p)) for p in files), manifest_key(entry.unique_id)]

    def lock_ended(key: str) -> bool:
        lock = objects.retention(key)
        return lock is None or datetime.now(UTC) > lock.retain_until

    wait_until(lambda: all(lock_ended(k) for k in keys), timeout=30)
    first = cloud.run_scheduled("destroy_expired", {})
    # Then the study is destroyed and its entry is Deprecated, not yet removed
    assert study_uid in first["destroyed"] and study_uid not in first["registry_removed"], (
        first,
        {k: objects.retention(k) for k in keys},
    )
    [entry] = registry.documents_by_uuid([entry_uuid])
    assert entry.status is EntryStatus.DEPRECATED
    assert [d.entry_uuid for d in registry.documents_by_patient(cx, [EntryStatus.APPROVED])] == []
    # And the destruction record names the entry and when it is to be removed
    (record,) = DestructionRepository().records_of(study_uid)
    assert record.registry_entries == (entry_uuid,)
    assert record.registry_removal_due is not None and record.registry_removed_at is None
    assert record.registry_removal_due > record.destroyed_at

    # When the policy's delay has passed and the job runs again
    wait_until(lambda: datetime.now(UTC) > record.registry_removal_due, timeout=30)  # type: ignore[operator]
    second = cloud.run_scheduled("destroy_expired", {})
    # Then the entry, its submission set and their association are gone from the registry
    assert second["registry_removed"] == [study_uid] or study_uid in second["registry_removed"]
    assert registry.documents_by_uuid([entry_uuid]) == []
    assert registry.documents_by_unique_id([entry.unique_id]) == []
    assert registry.associations_of([entry_uuid]) == []
    assert registry.study_documents(cx, study_uid) == []
    # And the record says when; a third run removes nothing again
    (record,) = DestructionRepository().records_of(study_uid)
    assert (
        record.registry_removed_at is not None and record.registry_removed_at >= record.registry_removal_due
    )
    assert study_uid not in cloud.run_scheduled("destroy_expired", {})["registry_removed"]


def _registration(study_uid: str) -> Registration | None:
    try:
        item = Registration.get(study_uid, consistent_read=True)
    except DoesNotExist:
        return None
    return item if item.entry_uuid else None


def test_destruction_after_an_hl7_merge_finds_every_registry_entry_and_destroys_manifests_and_notes(
    cloud: LocalCloud, workdir: Path
) -> None:
    assert cloud.settings is not None
    registry = XdsRegistry(cloud.settings)
    objects = ObjectStore(cloud.settings)
    # Given an organisation that registers its studies, with its patient administration system
    # (HL7 facility DESTROY_PAS, temporary IDs under ADT1) and a one-day rule
    oid = f"1.2.246.10.{int(new_uid().rsplit('.', 1)[1]) % 10**8}.10"
    cloud.register(
        OrganisationInfo(oid, "Merging Clinic", trusted_issuers=(HETU_ISSUER, TEMP_ISSUER)),
        AEInfo("MERGE_MOD", oid, "127.0.0.1", free_port(), roles=("store",)),
    )
    FacilityRepository().add(FacilityInfo("DESTROY_PAS", oid, {"ADT1": TEMP_ISSUER}), replace=True)
    cloud.configure_registration(oid, stability_seconds=1.0, register_uncommitted=True)
    assert admin(cloud, "retention", "rule", "set", oid, "*", "--days", "1").returncode == 0
    # And a study from 2000 under a temporary ID, registered, one instance rejected by a note
    temp, pid = fresh_id(), hetu()
    files = study(sub(workdir, "s"), 3, patient_id=temp, issuer=TEMP_ISSUER, study_date="20000101")
    assert storescu(cloud, files, aet="MERGE_MOD").returncode == 0
    study_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    wait_until(lambda: _version(study_uid) >= 1, timeout=90)
    kos = rejection_note(files[-1:])
    kos.IssuerOfPatientID = TEMP_ISSUER  # (highdicom does not copy it; the organisation has no default)
    note = write_note(kos, workdir)
    assert store_status(cloud, note, "MERGE_MOD") == 0x0000
    wait_until(lambda: _version(study_uid) >= 2, timeout=90)  # a version without the rejected one
    # When the PAS merges the temporary ID into the personal identity code (A40, over MLLP)
    message = adt(
        "A40", pid, authority=f"&{HETU_ISSUER}&ISO", prior_id=temp, prior_authority="ADT1",
        control_id=f"D{temp}", facility="DESTROY_PAS",
    )  # fmt: skip
    [ack] = simple_hl7_send(cloud, [message], workdir)
    assert ack.code == "AA", ack.text
    wait_for_change(cloud, PatientIdentity(temp, TEMP_ISSUER), f"D{temp}")
    wait_until(lambda: _version(study_uid) >= 3, timeout=90)  # registered under the surviving ID
    temp_cx, cx = f"{temp}^^^&{TEMP_ISSUER}&ISO", f"{pid}^^^&{HETU_ISSUER}&ISO"
    under_temp = registry.study_documents(study_uid)
    assert {d.patient_id for d in under_temp} == {temp_cx, cx} and len(under_temp) == 3
    manifests = {manifest_key(d.unique_id) for d in under_temp}
    note_key = rejection_note_key(uid(note))
    stored = {key: objects.head(key).sha256 for key in (*manifests, note_key)}  # type: ignore[union-attr]

    # When the locks have run out (the manifests and the note are locked like the instances)
    def lock_ended(key: str) -> bool:
        lock = objects.retention(key)
        return lock is None or datetime.now(UTC) > lock.retain_until

    wait_until(lambda: all(lock_ended(k) for k in [*manifests, note_key, instance_key(uid(files[0]))]), 60)
    first = cloud.run_scheduled("destroy_expired", {})
    # Then the study is destroyed with its manifests (every version) and its rejection note
    assert study_uid in first["destroyed"]
    for key in (*manifests, note_key, *(instance_key(uid(p)) for p in files)):
        assert objects.versions_of(key) == []
    # And the record lists them with their SHA-256 as S3 verified it at store, beside the instances
    (record,) = DestructionRepository().records_of(study_uid)
    assert record.instance_count == 3
    assert {o.key: o.sha256 for o in record.objects if o.key in stored} == stored
    assert {instance_key(uid(p)) for p in files} <= {o.key for o in record.objects}
    # And every registry entry of the study is Deprecated, those under the prior ID too
    entries = {d.entry_uuid for d in under_temp}
    assert set(record.registry_entries) == entries
    assert {d.status for d in registry.documents_by_uuid(sorted(entries))} == {EntryStatus.DEPRECATED}
    # And once the policy's delay has passed, a later run removes all of them
    wait_until(lambda: datetime.now(UTC) > record.registry_removal_due, timeout=30)  # type: ignore[operator]
    assert study_uid in cloud.run_scheduled("destroy_expired", {})["registry_removed"]
    assert registry.documents_by_uuid(sorted(entries)) == []
    assert registry.study_documents(study_uid) == []
    assert registry.documents_by_reference_id(temp_cx, [f"{study_uid}^^^^{STUDY_UID_REFERENCE}"]) == []


def _version(study_uid: str) -> int:
    try:
        return int(Registration.get(study_uid, consistent_read=True).version or 0)
    except DoesNotExist:
        return 0


def test_a_rule_requiring_approval_destroys_only_after_an_operator_approved(
    cloud: LocalCloud, workdir: Path
) -> None:
    assert cloud.settings is not None
    objects = ObjectStore(cloud.settings)
    # Given an organisation whose one-day rule requires an approval, and a study of it from 2000
    c = customer(cloud)
    result = admin(cloud, "retention", "rule", "set", c.org.oid, "*", "--days", "1", "--approval-required")
    assert result.returncode == 0, result.stderr
    files = study(sub(workdir, "approval"), 2, patient_id=hetu(), study_date="20000101")
    due = store_study(cloud, c, files)
    keys = [instance_key(uid(p)) for p in files]

    def unlocked() -> bool:
        return all(datetime.now(UTC) > objects.retention(k).retain_until for k in keys)  # type: ignore[union-attr]

    wait_until(unlocked, timeout=30)
    # When the destruction job runs (even invoked with an approver's name)
    first = cloud.run_scheduled("destroy_expired", {"approved_by": "Scheduler Sam"})
    # Then the study waits for an operator's approval and nothing of it is deleted
    assert due in first["awaiting_approval"] and due not in first["destroyed"]
    assert all(objects.versions_of(k) for k in keys)
    assert DestructionRepository().records_of(due) == []
    # And an approval needs who and why, for a study the index holds
    assert admin(cloud, "destruction", "approve", due, "--by", "Archivist Aino").returncode != 0
    unknown = admin(cloud, "destruction", "approve", new_uid(), "--by", "Archivist Aino", "--reason", "x")
    assert unknown.returncode != 0 and "no study" in unknown.stderr
    # When an operator approves it and the job runs again
    approved = admin(
        cloud, "destruction", "approve", due, "--by", "Archivist Aino", "--reason", "board 3/2026"
    )
    assert approved.returncode == 0, approved.stderr
    second = cloud.run_scheduled("destroy_expired", {"approved_by": "Scheduler Sam"})
    # Then it is destroyed, and its record names the approver (not the invocation's) and the rule
    assert due in second["destroyed"] and due not in second["awaiting_approval"]
    assert all(objects.versions_of(k) == [] for k in keys)
    (record,) = DestructionRepository().records_of(due)
    assert record.approved_by == "Archivist Aino"
    assert record.rules == (
        f"{c.org.oid} *: 0 years 1 days from the study date; 113039 EXPIRED, approval required",
    )
    shown = admin(cloud, "destruction", "show", due)
    assert shown.returncode == 0, shown.stderr
    assert '"reason": "board 3/2026"' in shown.stdout and '"approved_by": "Archivist Aino"' in shown.stdout
