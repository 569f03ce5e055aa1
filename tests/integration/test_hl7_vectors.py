"""Given the local cloud, when the published HL7 test messages are sent by an independent MLLP
client (simple-hl7, npm), then they are acknowledged as the conformance statement says and their
effects are in the index and the patients' history."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from archive.data.models import Patient
from archive.data.patients import PatientRepository
from archive.model.identity import PatientIdentity

from local.cloud import DEMO_ORG, ROOT, LocalCloud
from tests.support.cloud import json_lines, wait_until
from tests.support.hl7 import (
    HETU_ISSUER,
    TEMP_ISSUER,
    adt,
    fresh_id,
    simple_hl7_send,
    vector,
    wait_for_change,
)


def temp(patient_id: str) -> PatientIdentity:
    return PatientIdentity(patient_id, TEMP_ISSUER)


def test_published_messages_as_published_get_their_acks_and_effects(cloud: LocalCloud, workdir: Path) -> None:
    # Given the four published messages, unchanged, in the order a PAS would send them
    names = [
        "ADT_A31-UpdatePersonInfo.hl7",
        "ADT_A40-PatientMerge.hl7",
        "ADT_A47-ChangePatientID.hl7",
        "ADT_A08.hl7",
    ]
    # When simple-hl7 sends them over one connection
    acks = simple_hl7_send(cloud, [vector(n) for n in names], workdir)
    # Then A31 and A40 are accepted; A47 asks for what the A40 already did (OLD_PID_1 is now
    # NEW_PID_1), so it is accepted as a no-op; the A08's only PID-3 has an unmapped namespace (zxcv): AR
    assert [a.code for a in acks] == ["AA", "AA", "AA", "AR"], [a.text for a in acks]
    assert [a.control_id for a in acks] == ["100212", "1002122", "1002123", "100212"]
    assert (acks[3].error, acks[3].location) == ("103", "PID^1^3^1^4")
    # And the A31 set the name of PID_1, the A40 merged OLD_PID_1 into NEW_PID_1 under its new name
    wait_for_change(cloud, temp("OLD_PID_1"), "1002123")
    assert Patient.get(temp("PID_1").key).patient_name == "Smith^Lucy^Mark"
    assert Patient.get(temp("OLD_PID_1").key).merged_into == temp("NEW_PID_1").key
    survivor = Patient.get(temp("NEW_PID_1").key)
    assert (survivor.patient_name, survivor.birth_date, survivor.sex) == (
        "New_Smith^Lucy^Mark",
        "20141014",
        "F",
    )
    assert survivor.merged_into is None
    # And the history of the prior identity shows the merge and then the no-op identifier change
    assert cloud.settings is not None
    history = PatientRepository(cloud.settings).history(temp("OLD_PID_1").key)
    assert [(h["event"], h["outcome"]) for h in history] == [("A40", "APPLIED"), ("A47", "UNCHANGED")]


def test_a31_and_a08_update_the_name_and_keep_the_history(cloud: LocalCloud, workdir: Path) -> None:
    # Given a patient known by a name from an A31
    pid = fresh_id()
    a31 = vector("ADT_A31-UpdatePersonInfo.hl7", PID_1=pid)
    # When an A08 (the published one, with its PID-3 in the ADT1 namespace) renames the patient
    a08 = vector("ADT_A08.hl7", control_id=f"U{pid}").replace(
        b"|4711471151^^^zxcv|", f"|{pid}^^^ADT1|".encode()
    )
    acks = simple_hl7_send(cloud, [a31, a08], workdir)
    # Then both are accepted and the name is the A08's, the birth date and sex too
    assert [a.code for a in acks] == ["AA", "AA"], [a.text for a in acks]
    wait_for_change(cloud, temp(pid), f"U{pid}")
    patient = Patient.get(temp(pid).key)
    assert (patient.patient_name, patient.birth_date, patient.sex) == ("Smith^Shadow", "20141014", "F")
    # And the admin CLI shows both changes with sender, time and before/after
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "layers/core/python"), str(ROOT)])}
    history_args = ("patient", "history", pid, "--issuer", TEMP_ISSUER)
    result = subprocess.run(
        [sys.executable, "-m", "admin", "--endpoint", cloud.endpoint, *history_args],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    lines = json_lines(result.stdout)
    assert [(h["event"], h["outcome"]) for h in lines] == [("A31", "APPLIED"), ("A08", "APPLIED")]
    assert lines[1]["sender"] == "MESA_OF|XYZ_RADIOLOGY"
    assert lines[1]["before"]["patient_name"] == "Smith^Lucy^Mark"
    assert lines[1]["after"]["patient_name"] == "Smith^Shadow"
    assert lines[1]["received_at"].endswith("+00:00")
    assert "ADT^A08" in lines[1]["message"]


def test_a47_changes_the_identifier_unless_the_new_one_exists(cloud: LocalCloud, workdir: Path) -> None:
    # Given a patient with a name, and another patient already known by the ID an A47 will ask for
    old, new, taken = fresh_id(), fresh_id(), fresh_id()
    setup = [
        vector("ADT_A31-UpdatePersonInfo.hl7", PID_1=old),
        vector("ADT_A31-UpdatePersonInfo.hl7", PID_1=taken, control_id=f"S{taken}"),
    ]
    assert [a.code for a in simple_hl7_send(cloud, setup, workdir)] == ["AA", "AA"]
    wait_for_change(cloud, temp(taken), f"S{taken}")
    # When the published A47 changes OLD to a fresh ID, and another A47 asks for the taken one
    change = vector("ADT_A47-ChangePatientID.hl7", OLD_PID_1=old, NEW_PID_1=new, control_id=f"C{old}")
    clash = vector("ADT_A47-ChangePatientID.hl7", OLD_PID_1=old, NEW_PID_1=taken)
    acks = simple_hl7_send(cloud, [clash, change], workdir)
    # Then the clash is refused with 205 (duplicate key) and the change is accepted
    assert (acks[0].code, acks[0].error) == ("AE", "205"), acks[0].text
    assert acks[1].code == "AA", acks[1].text
    wait_for_change(cloud, temp(old), f"C{old}")
    # And the old ID points at the new one, which carries the patient's demographics
    assert Patient.get(temp(old).key).merged_into == temp(new).key
    assert Patient.get(temp(new).key).patient_name == "Smith^Lucy^Mark"
    assert Patient.get(temp(taken).key).merged_into is None
    # And later HL7 for the old ID is refused with 204
    again = vector("ADT_A31-UpdatePersonInfo.hl7", PID_1=old)
    ack = simple_hl7_send(cloud, [again], workdir)[0]
    assert (ack.code, ack.error) == ("AE", "204"), ack.text
    wait_until(lambda: Patient.get(temp(new).key).patient_name == "Smith^Lucy^Mark")


def test_a_facility_registered_with_the_admin_cli_or_the_organisation_oid_may_send(
    cloud: LocalCloud, workdir: Path
) -> None:
    # Given a new facility of the demo organisation whose namespace NS2 stands for hetus
    facility = fresh_id("FAC_")
    admin = ("hl7-facility", "add", facility, DEMO_ORG.oid, "--namespace", f"NS2={HETU_ISSUER}")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "layers/core/python"), str(ROOT)])}
    subprocess.run([sys.executable, "-m", "admin", "--endpoint", cloud.endpoint, *admin], env=env, check=True)
    first, second, unknown = fresh_id(), fresh_id(), fresh_id()
    messages = [
        # When it sends with its namespace, the organisation sends with its OID as MSH-4 (HD with
        # universal ID), and an unregistered facility sends
        adt("A31", first, authority="NS2", facility=facility, control_id=f"F{first}"),
        adt("A31", second, authority="", facility=f"^{DEMO_ORG.oid}^ISO", control_id=f"F{second}"),
        adt("A31", unknown, facility="NOT_REGISTERED"),
    ]
    acks = simple_hl7_send(cloud, messages, workdir)
    # Then the first two are accepted (the namespace standing for the hetu issuer; no authority for
    # the organisation's default issuer), and the last is rejected
    assert [(a.code, a.error) for a in acks] == [("AA", None), ("AA", None), ("AR", "103")], [
        a.text for a in acks
    ]
    wait_for_change(cloud, PatientIdentity(first, HETU_ISSUER), f"F{first}")
    wait_for_change(cloud, temp(second), f"F{second}")
