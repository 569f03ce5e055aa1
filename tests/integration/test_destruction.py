"""Lawful destruction end to end: the scheduled job (run on demand by the local runner) destroys
due studies found through the retention-end index, leaves held and still-locked ones whole, and
records every destroyed object's SHA-256. S3 refuses any early delete of what the archive wrote."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pydicom
import pytest
from archive.data.destruction import DestructionRepository
from archive.data.models import Instance, Registration, Study
from archive.data.objects import ObjectStore, instance_key
from archive.data.rejections import rejection_note_key
from archive.data.retention import RetentionRepository
from archive.data.xds_registry import XdsRegistry
from archive.errors import RetentionLocked
from archive.model.organisations import AEInfo, OrganisationInfo
from archive.model.xds import EntryStatus
from pynamodb.exceptions import DoesNotExist

from local.cloud import LocalCloud, free_port
from tests.integration.test_corrections import admin, store_status, uid
from tests.integration.test_query_retrieve import Customer, customer, hetu, store_study, sub
from tests.support.audit import wait_for_record
from tests.support.cloud import storescu, wait_until
from tests.support.dicom import HETU_ISSUER, new_uid, study
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
    # And a study of a customer without rules (bucket default lock, one day), marked due by hand
    other = customer(cloud)
    locked_files = study(sub(workdir, "locked"), 1, patient_id=hetu(), study_date="20000101")
    locked = store_study(cloud, other, locked_files)
    assert RetentionRepository().extend_study(locked, datetime(2000, 1, 2, tzinfo=UTC))
    # And a rejection note in that study (the other object type the archive writes)
    note = write_note(rejection_note(locked_files), workdir)
    assert store_status(cloud, note, other.scu) == 0x0000

    # Then no request can delete them early: S3 refuses every version of an instance and of a note
    for key in (instance_key(uid(locked_files[0])), rejection_note_key(uid(note))):
        for version in objects.versions_of(key):
            with pytest.raises(RetentionLocked):
                objects.delete_version(key, version)

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

    # When its minimum lock has run out and the destruction job runs
    wait_until(
        lambda: datetime.now(UTC) > objects.retention(instance_key(uid(files[-1]))).retain_until, timeout=30
    )  # type: ignore[union-attr]
    first = cloud.run_scheduled("destroy_expired", {})
    # Then the study is destroyed and its entry is Deprecated, not yet removed
    assert study_uid in first["destroyed"] and study_uid not in first["registry_removed"]
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
