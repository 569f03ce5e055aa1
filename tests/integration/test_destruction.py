"""Lawful destruction end to end: the scheduled job (run on demand by the local runner) destroys
due studies found through the retention-end index, leaves held and still-locked ones whole, and
records every destroyed object's SHA-256. S3 refuses any early delete of what the archive wrote."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pydicom
import pytest
from archive.data.destruction import DestructionRepository
from archive.data.models import Instance, Study
from archive.data.objects import ObjectStore, instance_key
from archive.data.rejections import rejection_note_key
from archive.data.retention import RetentionRepository
from archive.errors import RetentionLocked
from pynamodb.exceptions import DoesNotExist

from local.cloud import LocalCloud
from tests.integration.test_corrections import admin, store_status, uid
from tests.integration.test_query_retrieve import customer, hetu, store_study, sub
from tests.support.audit import wait_for_record
from tests.support.cloud import wait_until
from tests.support.dicom import study
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
