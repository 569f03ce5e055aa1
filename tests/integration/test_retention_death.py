"""Retention from the patient's death, and retention jobs, end to end over real sockets and the
local cloud: a death from HL7 (PID-29, the hl7 package's MLLP client) or an operator recomputes
the patient's studies' retention ends and lengthens their objects' Object Locks through the
retention job (the extend_retention function, page by page); a growing rule does the same, also
for a study without a Study Date; the destruction job then destroys per the death-based end."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, date, datetime, timedelta
from itertools import count
from pathlib import Path

import hl7
import pydicom
from archive.data.facilities import FacilityRepository
from archive.data.models import Instance, Patient, Study
from archive.data.patients import PatientRepository
from archive.data.retention import RetentionRepository
from archive.model.identity import PatientIdentity
from archive.model.organisations import FacilityInfo
from hl7.mllp import open_hl7_connection
from pynamodb.exceptions import DoesNotExist

from local.cloud import LocalCloud
from tests.integration.test_corrections import admin
from tests.integration.test_query_retrieve import Customer, customer, hetu, store_study, sub
from tests.support.cloud import s3, wait_until
from tests.support.dicom import HETU_ISSUER, study
from tests.support.hl7 import Ack

_facilities = count(1)


def _locks(cloud: LocalCloud, files: list[Path]) -> set[datetime]:
    """The retain-until date of each stored object version, as S3 returns it (HeadObject)."""
    assert cloud.settings is not None
    client = s3(cloud)
    found = set()
    for path in files:
        instance = Instance.get(str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID))
        head = client.head_object(
            Bucket=cloud.settings.bucket, Key=instance.s3_key, VersionId=instance.s3_version_id
        )
        found.add(head["ObjectLockRetainUntilDate"].astimezone(UTC))
    return found


def _end(study_uid: str) -> tuple[str | None, str | None]:
    item = Study.get(study_uid, consistent_read=True)
    return item.retention_end, item.retention_basis


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _hl7_facility(c: Customer) -> str:
    facility = f"RET_FAC_{next(_facilities)}_{c.org.oid.rsplit('.', 1)[-1]}"
    FacilityRepository().add(FacilityInfo(facility, c.org.oid, {}), replace=True)
    return facility


def _a08(facility: str, patient_id: str, control_id: str, death: str, indicator: str = "") -> str:
    """ADT^A08 whose PID carries PID-29 (death date/time) and PID-30 (death indicator)."""
    pid = f"PID|||{patient_id}^^^&{HETU_ISSUER}&ISO||Testinen^Matti||19160502|M" + "|" * 21
    return "\r".join(
        [
            f"MSH|^~\\&|TEST_PAS|{facility}|ARCHIVE|NATIONAL|20260101120000||ADT^A08^ADT_A01|{control_id}|P|2.5.1",
            "EVN||20260101120000",
            f"{pid}{death}|{indicator}",
        ]
    )


def _send(cloud: LocalCloud, message: str) -> Ack:
    """Send one message with the hl7 package's MLLP client; its ACK."""

    async def exchange() -> Ack:
        reader, writer = await open_hl7_connection("127.0.0.1", cloud.hl7_port, encoding="latin-1")
        try:
            writer.writemessage(hl7.parse(message))
            await writer.drain()
            return Ack.parse(str(await asyncio.wait_for(reader.readmessage(), 60)))
        finally:
            writer.close()
            await writer.wait_closed()

    return asyncio.run(exchange())


def _job_done(cloud: LocalCloud, job_id: str) -> dict[str, object]:
    """Wait for a retention job to finish (read from its table, no CLI process per poll); then
    what `retention job` shows of it."""
    repository = RetentionRepository()
    wait_until(lambda: (job := repository.job(job_id)) is not None and job.state == "DONE", timeout=120)
    shown = admin(cloud, "retention", "job", job_id)
    assert shown.returncode == 0, shown.stderr
    return dict(json.loads(shown.stdout))


def test_a08_death_date_recomputes_the_patients_studies_and_locks_and_no_others(
    cloud: LocalCloud, workdir: Path
) -> None:
    # Given Finland's rule for a customer: 12 years after death, while unknown 130 years from birth
    c = customer(cloud)
    rule = ("retention", "rule", "set", c.org.oid, "*", "--years", "12", "--from", "death")
    set_rule = admin(cloud, *rule, "--unknown-death-years-from-birth", "130")
    assert set_rule.returncode == 0, set_rule.stderr
    facility = _hl7_facility(c)
    # And two studies of patient A (one without a Study Date) and one of patient B (born 1916-05-02)
    a, b = hetu(), hetu()
    a1 = study(sub(workdir, "a1"), 2, patient_id=a, study_date="20260115")
    a2 = study(sub(workdir, "a2"), 2, patient_id=a, study_date="")
    b1 = study(sub(workdir, "b1"), 1, patient_id=b, study_date="20260115")
    a1_uid, a2_uid, b1_uid = (store_study(cloud, c, files) for files in (a1, a2, b1))
    received = Study.get(a2_uid).first_received_at.date()
    # Then, the deaths unknown, the objects are locked for the years from the study (the least a
    # death-based end can be) and the studies end 130 years from birth
    assert _locks(cloud, a1 + b1) == {datetime(2038, 1, 15, tzinfo=UTC)}
    assert _locks(cloud, a2) == {_midnight(received.replace(year=received.year + 12))}
    assert {_end(uid) for uid in (a1_uid, a2_uid, b1_uid)} == {("2046-05-02T00:00:00+00:00", "BIRTH")}
    # When the PAS reports patient A's death on 2030-01-01 (A08, PID-29)
    ack = _send(cloud, _a08(facility, a, "DEATH-A-1", "203001011200"))
    assert (ack.code, ack.error) == ("AA", None), ack.text
    # Then both of A's studies end 12 years after the death, and their objects are locked as long
    death_end = "2042-01-01T00:00:00+00:00"
    wait_until(lambda: _end(a1_uid)[0] == death_end and _end(a2_uid)[0] == death_end, timeout=120)
    assert _end(a1_uid) == (death_end, "DEATH")
    wait_until(lambda: _locks(cloud, a1 + a2) == {datetime(2042, 1, 1, tzinfo=UTC)}, timeout=120)
    assert Patient.get(PatientIdentity(a, HETU_ISSUER).key).death_date == "20300101"
    # And patient B's study and objects are as they were
    assert _end(b1_uid) == ("2046-05-02T00:00:00+00:00", "BIRTH")
    assert _locks(cloud, b1) == {datetime(2038, 1, 15, tzinfo=UTC)}

    # When a death date that is no date comes for B
    bad = _send(cloud, _a08(facility, b, "DEATH-B-BAD", "2030-01-01"))
    # Then it is refused with the field named, and nothing changes
    assert bad.code in ("AE", "AR") and bad.location == "PID^1^29", bad.text
    assert Patient.get(PatientIdentity(b, HETU_ISSUER).key).death_date is None
    assert _end(b1_uid) == ("2046-05-02T00:00:00+00:00", "BIRTH")
    assert _locks(cloud, b1) == {datetime(2038, 1, 15, tzinfo=UTC)}

    # When the PAS retracts A's death (PID-30 "N")
    retract = _send(cloud, _a08(facility, a, "DEATH-A-2", "", "N"))
    assert retract.code == "AA", retract.text
    # Then A's studies go back to the years from birth (longer), and no lock is shortened
    wait_until(lambda: _end(a1_uid) == ("2046-05-02T00:00:00+00:00", "BIRTH"), timeout=120)
    wait_until(lambda: _end(a2_uid) == ("2046-05-02T00:00:00+00:00", "BIRTH"), timeout=120)
    assert _locks(cloud, a1 + a2) == {datetime(2042, 1, 1, tzinfo=UTC)}


def test_operator_death_record_runs_the_job_and_destruction_follows_the_death_based_end(
    cloud: LocalCloud, workdir: Path
) -> None:
    # Given a short death rule (3 days after death, no years from birth) and an old study of a
    # patient whose death is not known: its lock is the minimum, and it is never due
    c = customer(cloud)
    rule = ("retention", "rule", "set", c.org.oid, "*", "--days", "3", "--from", "death")
    assert admin(cloud, *rule).returncode == 0
    patient = hetu()
    files = study(sub(workdir, "old"), 2, patient_id=patient, study_date="20000110")
    study_uid = store_study(cloud, c, files)
    assert _end(study_uid) == (None, None)
    due = admin(cloud, "retention", "due")
    assert study_uid not in due.stdout
    # When an operator gives a death date that is not YYYYMMDD, it is refused and nothing changes
    death = ("retention", "death", "record", "--patient", patient, "--issuer", HETU_ISSUER)
    why = ("--by", "Registrar Riikka", "--reason", "population register")
    refused = admin(cloud, *death, "--date", "2000-01-20", *why)
    assert refused.returncode != 0 and "not a date YYYYMMDD" in refused.stderr
    assert _end(study_uid) == (None, None)
    # When an operator records the death (2000-01-20) with who and why
    recorded = admin(
        cloud,
        "retention",
        "death",
        "record",
        "--patient",
        patient,
        "--issuer",
        HETU_ISSUER,
        "--date",
        "20000120",
        "--by",
        "Registrar Riikka",
        "--reason",
        "population register",
    )
    assert recorded.returncode == 0, recorded.stderr
    job = _job_done(cloud, json.loads(recorded.stdout)["job_id"])
    # Then the job recomputed the study: it ends three days after the death
    assert (job["kind"], job["studies"], job["studies_changed"]) == ("patient", 1, 1)
    assert _end(study_uid) == ("2000-01-23T00:00:00+00:00", "DEATH")
    # And the patient's history says who recorded it and why
    key = PatientIdentity(patient, HETU_ISSUER).key
    assert cloud.settings is not None
    history = PatientRepository(cloud.settings).history(key)
    assert any(h["event"] == "DEATH" and h["sender"] == "operator Registrar Riikka" for h in history)
    # When the destruction job runs after the minimum lock has passed
    wait_until(lambda: max(_locks(cloud, files)) < datetime.now(UTC), timeout=30)
    run = cloud.run_scheduled("destroy_expired", {"approved_by": "Archivist Aino"})
    # Then it destroys the study, found through its death-based end
    destroyed = run["destroyed"]
    assert isinstance(destroyed, list) and study_uid in destroyed, run
    try:
        Study.get(study_uid, consistent_read=True)
        raise AssertionError("the study is still in the index")
    except DoesNotExist:
        pass


def test_a_growing_rule_lengthens_locks_through_the_job_also_without_a_study_date(
    cloud: LocalCloud, workdir: Path
) -> None:
    # Given a 30-day rule and two studies: one from 2030, one without a Study Date
    c = customer(cloud)
    assert admin(cloud, "retention", "rule", "set", c.org.oid, "*", "--days", "30").returncode == 0
    dated = study(sub(workdir, "dated"), 2, patient_id=hetu(), study_date="20300115")
    undated = study(sub(workdir, "undated"), 3, patient_id=hetu(), study_date="")
    dated_uid, undated_uid = store_study(cloud, c, dated), store_study(cloud, c, undated)
    received = Study.get(undated_uid).first_received_at.date()
    assert _locks(cloud, dated) == {datetime(2030, 2, 14, tzinfo=UTC)}
    # When the rule grows to 400 days
    grown = admin(cloud, "retention", "rule", "set", c.org.oid, "*", "--days", "400", "--by", "Admin A")
    assert grown.returncode == 0, grown.stderr
    job = _job_done(cloud, json.loads(grown.stdout)["job_id"])
    # Then the job went page by page (three objects a page here) over both studies
    assert (job["studies"], job["objects_extended"], job["requested_by"]) == (2, 5, "Admin A")
    assert int(str(job["pages"])) >= 2
    # And every object is locked 400 days from its study date, or from the day it was received
    undated_end = _midnight(received + timedelta(days=400))
    assert _locks(cloud, dated) == {datetime(2031, 2, 19, tzinfo=UTC)}
    assert _locks(cloud, undated) == {undated_end}
    assert _end(dated_uid)[0] == "2031-02-19T00:00:00+00:00"
    assert _end(undated_uid)[0] == undated_end.isoformat()
    # When the same rule is set again, the job changes nothing
    again = admin(cloud, "retention", "rule", "set", c.org.oid, "*", "--days", "400")
    assert _job_done(cloud, json.loads(again.stdout)["job_id"])["objects_extended"] == 0
