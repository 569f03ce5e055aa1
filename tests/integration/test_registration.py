"""Registration of committed studies as XDS-I.b manifests, confirmed by IAN, over real sockets.

DCMTK storescu sends a study, a pynetdicom SCU requests storage commitment, and a pynetdicom IAN SCP
at DEMO_PACS (127.0.0.1:11113) receives the notification. The manifest is read back from S3 and
checked with dciodvfy and dsrdump; the registry entry is read through XdsRegistry.
"""

from __future__ import annotations

import hashlib
import io
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pydicom
import pytest
from archive.data.models import Registration, Study
from archive.data.objects import manifest_key
from archive.data.xds_registry import XdsRegistry
from archive.model.identity import PatientIdentity
from archive.model.organisations import AEInfo, OrganisationInfo
from archive.model.registration import FORMAT_CODE, MODALITY_SCHEME
from archive.model.xds import AssociationType, Channel, EntryStatus
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from local.cloud import DEMO_ARCHIVE, DEMO_DOMAIN, DEMO_ORG, LocalCloud, free_port
from tests.support.cloud import s3, storescu, wait_until
from tests.support.dicom import HETU_ISSUER, ct_dataset, new_uid, write
from tests.support.hl7 import TEMP_ISSUER, adt, fresh_id, simple_hl7_send, wait_for_change
from tests.support.ian import IanReceiver
from tests.support.scu import Modality, action_information

DEMO_PACS_PORT = 11113


def hetu() -> str:
    return f"0101{fresh_id('')[:2]}A9{fresh_id('')[:3]}"


def send_and_commit(cloud: LocalCloud, files: list[Path], *, aet: str = "DEMO_MOD") -> None:
    """storescu sends the files; a pynetdicom SCU asks commitment for them and gets 'all committed'."""
    result = storescu(cloud, files, aet=aet)
    assert result.returncode == 0, result.stderr
    refs = [(CTImageStorage, str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID)) for f in files]
    modality = Modality(cloud.dicom_port, ae_title=aet)
    try:
        assert modality.request_commitment(action_information(refs)) == 0x0000
        report = modality.wait_report(timeout=90)
    finally:
        modality.release()
    assert report.event_type == 1, report.info


def registered_version(study_uid: str, version: int, timeout: float = 90) -> Registration:
    return wait_until(
        lambda: (r := Registration.get(study_uid)) and r.version is not None and r.version >= version and r,
        timeout=timeout,
    )


def dciodvfy_errors(path: Path) -> list[str]:
    result = subprocess.run(["/usr/bin/dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]


@pytest.fixture
def demo_pacs() -> IanReceiver:
    receiver = IanReceiver("DEMO_PACS", DEMO_PACS_PORT)
    yield receiver  # type: ignore[misc]
    receiver.stop()


def test_committed_study_is_registered_as_a_manifest_and_confirmed_by_ian(
    cloud: LocalCloud, workdir: Path, demo_pacs: IanReceiver
) -> None:
    assert cloud.settings is not None
    # Given a two-series study taken in winter in Helsinki (UTC+2), with an accession and its issuer
    pid = hetu()
    study_uid, ct_series, mr_series = new_uid(), new_uid(), new_uid()
    datasets = [
        ct_dataset(patient_id=pid, study_uid=study_uid, series_uid=ct_series, instance_number=i + 1)
        for i in range(2)
    ] + [ct_dataset(patient_id=pid, study_uid=study_uid, series_uid=mr_series, modality="MR")]
    for ds in datasets:
        ds.ContentDate, ds.ContentTime = "20260115", "103000"
        issuer = pydicom.Dataset()
        issuer.UniversalEntityID, issuer.UniversalEntityIDType = "1.2.246.10.12345678.14", "ISO"
        ds.IssuerOfAccessionNumberSequence = [issuer]
    files = [write(ds, workdir) for ds in datasets]

    # When DCMTK sends it and the modality's commitment is reported all committed
    send_and_commit(cloud, files)

    # Then DEMO_PACS receives an IAN listing every instance ONLINE at the archive's AE
    notice = demo_pacs.wait_for(study_uid, timeout=90)
    assert notice.calling_ae == "ARCHIVE"
    assert notice.instances() == {
        str(ds.SOPInstanceUID): (str(ds.SeriesInstanceUID), CTImageStorage, "ONLINE", "ARCHIVE")
        for ds in datasets
    }
    assert list(notice.dataset.ReferencedPerformedProcedureStepSequence) == []

    # And the study is registered: one Approved DocumentEntry for the patient
    state = registered_version(study_uid, 1)
    registry = XdsRegistry(cloud.settings)
    cx = f"{pid}^^^&{HETU_ISSUER}&ISO"
    [entry] = [
        d
        for d in registry.documents_by_patient(cx, [EntryStatus.APPROVED])
        if d.study_instance_uid == study_uid
    ]
    assert (entry.entry_uuid, entry.unique_id) == (state.entry_uuid, state.manifest_uid)
    assert entry.channel is Channel.MANIFEST and entry.controller == DEMO_ORG.oid
    assert entry.mime_type == "application/dicom" and entry.format_code == FORMAT_CODE
    assert entry.repository_unique_id == DEMO_ARCHIVE.repository_unique_id
    codes = DEMO_DOMAIN.codes
    assert entry.class_code == codes.class_code and entry.type_code == codes.type_code
    assert entry.confidentiality_codes == codes.confidentiality_codes
    assert entry.healthcare_facility_type == codes.healthcare_facility_type
    assert entry.practice_setting == codes.practice_setting and entry.language_code == "fi-FI"
    assert {(c.code, c.scheme) for c in entry.event_codes} == {
        ("CT", MODALITY_SCHEME),
        ("MR", MODALITY_SCHEME),
    }
    assert entry.authors[0].institutions == (f"{DEMO_ORG.name}^^^^^^^^^{DEMO_ORG.oid}",)
    assert entry.source_patient_id == cx and "PID-5|Testinen^Matti" in entry.source_patient_info
    assert entry.reference_ids == (
        "ACC001^^^&1.2.246.10.12345678.14&ISO^urn:ihe:iti:xds:2013:accession",
        f"{study_uid}^^^^urn:ihe:iti:xds:2016:studyInstanceUID",
    )
    # (times are UTC: 10:15 and 10:30 in Helsinki in January are 08:15 and 08:30 UTC)
    assert entry.service_start_time == datetime(2026, 1, 15, 8, 15, tzinfo=UTC)
    assert entry.service_stop_time == datetime(2026, 1, 15, 8, 30, tzinfo=UTC)
    assert entry.creation_time.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    assert entry.status is EntryStatus.APPROVED and entry.version == 1
    # And found by reference id, unique id and entryUUID alike
    assert [d.entry_uuid for d in registry.documents_by_reference_id(cx, [entry.reference_ids[1]])] == [
        entry.entry_uuid
    ]
    assert [d.entry_uuid for d in registry.documents_by_unique_id([entry.unique_id])] == [entry.entry_uuid]
    # And a SubmissionSet from the archive holds it (HasMember)
    [has_member] = registry.associations_of([entry.entry_uuid])
    assert has_member.type is AssociationType.HAS_MEMBER and has_member.target == entry.entry_uuid
    [submission_set] = registry.submission_sets_by_uuid([has_member.source])
    assert submission_set.source_id == DEMO_ARCHIVE.oid and submission_set.patient_id == cx

    # And the manifest is in the Object-Locked bucket with its SHA-256, hash and size as registered
    obj = s3(cloud).get_object(
        Bucket=cloud.settings.bucket, Key=manifest_key(entry.unique_id), ChecksumMode="ENABLED"
    )
    body = obj["Body"].read()
    assert obj["ObjectLockMode"] in ("GOVERNANCE", "COMPLIANCE")
    assert obj["Metadata"]["sha256"] == hashlib.sha256(body).hexdigest()
    assert (hashlib.sha1(body).hexdigest(), len(body)) == (entry.hash, entry.size)
    path = workdir / "manifest.dcm"
    path.write_bytes(body)
    # And it is a valid KOS manifest listing every instance, by series, with retrieve AE and location
    assert dciodvfy_errors(path) == []
    dump = subprocess.run(["/usr/bin/dsrdump", str(path)], capture_output=True, text=True, check=True).stdout
    assert '(,,"Manifest")' in dump and dump.count("contains IMAGE") == 3
    manifest = pydicom.dcmread(path)
    assert manifest.Modality == "KO" and manifest.PatientID == pid
    [evidence] = manifest.CurrentRequestedProcedureEvidenceSequence
    listed = {
        str(series.SeriesInstanceUID): (
            series.RetrieveAETitle,
            series.RetrieveLocationUID,
            {str(i.ReferencedSOPInstanceUID) for i in series.ReferencedSOPSequence},
        )
        for series in evidence.ReferencedSeriesSequence
    }
    assert listed == {
        ct_series: (
            "ARCHIVE",
            DEMO_ARCHIVE.repository_unique_id,
            {str(d.SOPInstanceUID) for d in datasets[:2]},
        ),
        mr_series: ("ARCHIVE", DEMO_ARCHIVE.repository_unique_id, {str(datasets[2].SOPInstanceUID)}),
    }
    # And the manifest is not an instance of its own study (not indexed, not in C-FIND)
    assert Study.get(study_uid).number_of_instances == 3

    # When a later instance arrives and is committed
    later = ct_dataset(
        patient_id=pid, study_uid=study_uid, series_uid=mr_series, modality="MR", instance_number=2
    )
    send_and_commit(cloud, [write(later, workdir)])

    # Then a second IAN lists all four instances
    second = demo_pacs.wait_for(study_uid, count=4, timeout=90)
    assert str(later.SOPInstanceUID) in second.instances()
    # And a second manifest version replaces the first (RPLC), which is Deprecated
    state = registered_version(study_uid, 2)
    [new_entry] = registry.documents_by_uuid([state.entry_uuid])
    [old_entry] = registry.documents_by_uuid([entry.entry_uuid])
    assert new_entry.status is EntryStatus.APPROVED and old_entry.status is EntryStatus.DEPRECATED
    assert new_entry.version == 2 and new_entry.logical_id == entry.entry_uuid
    replaces = [
        a for a in registry.associations_of([new_entry.entry_uuid]) if a.type is AssociationType.REPLACE
    ]
    assert [(a.source, a.target) for a in replaces] == [(new_entry.entry_uuid, entry.entry_uuid)]
    approved = registry.documents_by_patient(cx, [EntryStatus.APPROVED])
    assert [d.entry_uuid for d in approved if d.study_instance_uid == study_uid] == [new_entry.entry_uuid]
    assert entry.entry_uuid in {
        d.entry_uuid for d in registry.documents_by_patient(cx, [EntryStatus.DEPRECATED])
    }


def test_hl7_merge_registers_a_new_version_under_the_surviving_patient(
    cloud: LocalCloud, workdir: Path, demo_pacs: IanReceiver
) -> None:
    assert cloud.settings is not None
    # Given a study registered under a temporary ID
    temp, pid = fresh_id(), hetu()
    study_uid = new_uid()
    files = [
        write(
            ct_dataset(patient_id=temp, issuer=TEMP_ISSUER, study_uid=study_uid, instance_number=i + 1),
            workdir,
        )
        for i in range(2)
    ]
    send_and_commit(cloud, files)
    demo_pacs.wait_for(study_uid, timeout=90)
    first = registered_version(study_uid, 1)
    assert first.patient_id == f"{temp}^^^&{TEMP_ISSUER}&ISO"
    # When the PAS merges the temporary ID into the personal identity code (A40)
    message = adt(
        "A40",
        pid,
        authority=f"&{HETU_ISSUER}&ISO",
        name="Virtanen^Matti",
        prior_id=temp,
        prior_authority="ADT1",
        control_id=f"R{temp}",
    )
    [ack] = simple_hl7_send(cloud, [message], workdir)
    assert ack.code == "AA", ack.text
    wait_for_change(cloud, PatientIdentity(temp, TEMP_ISSUER), f"R{temp}")
    # Then a second version is registered under the surviving ID, with the new name
    second = registered_version(study_uid, 2)
    registry = XdsRegistry(cloud.settings)
    [entry] = registry.documents_by_uuid([second.entry_uuid])
    assert entry.patient_id == f"{pid}^^^&{HETU_ISSUER}&ISO"
    assert "PID-5|Virtanen^Matti" in entry.source_patient_info
    [previous] = registry.documents_by_uuid([first.entry_uuid])
    assert previous.status is EntryStatus.DEPRECATED
    # And the IAN of the new version reaches DEMO_PACS
    demo_pacs.wait_for(study_uid, timeout=90)
    body = (
        s3(cloud).get_object(Bucket=cloud.settings.bucket, Key=manifest_key(entry.unique_id))["Body"].read()
    )
    manifest = pydicom.dcmread(io.BytesIO(body))
    assert (manifest.PatientID, str(manifest.PatientName)) == (pid, "Virtanen^Matti")


def test_an_organisation_may_register_studies_that_are_never_committed(
    cloud: LocalCloud, workdir: Path
) -> None:
    assert cloud.settings is not None
    # Given an organisation configured to register uncommitted studies too, with its PACS up
    oid = f"1.2.246.10.{int(new_uid().rsplit('.', 1)[1]) % 10**8}.10"
    port = free_port()
    cloud.register(
        OrganisationInfo(oid, "Uncommitted Clinic", trusted_issuers=(HETU_ISSUER,)),
        AEInfo("UNC_MOD", oid, "127.0.0.1", free_port(), roles=("store",)),
        AEInfo("UNC_PACS", oid, "127.0.0.1", port, roles=("ian",)),
    )
    cloud.configure_registration(oid, stability_seconds=1.0, register_uncommitted=True)
    receiver = IanReceiver("UNC_PACS", port)
    try:
        # When it and the demo hospital (commitment mandatory) each send a study without commitment
        demo_study = write(ct_dataset(study_uid=new_uid()), workdir)
        assert storescu(cloud, [demo_study], aet="DEMO_MOD").returncode == 0
        study_uid = new_uid()
        assert (
            storescu(cloud, [write(ct_dataset(study_uid=study_uid), workdir)], aet="UNC_MOD").returncode == 0
        )
        # Then the clinic's study is registered after the stability time and confirmed to its PACS
        receiver.wait_for(study_uid, timeout=90)
        assert registered_version(study_uid, 1).state == "REGISTERED"
    finally:
        receiver.stop()
    # And the demo hospital's uncommitted study, indexed before it, is not registered
    demo_uid = str(pydicom.dcmread(demo_study, stop_before_pixels=True).StudyInstanceUID)
    assert Study.get(demo_uid).number_of_instances == 1
    assert Registration.count(demo_uid) == 0
