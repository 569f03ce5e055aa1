"""The XDS-I.b manifest (KOS), the IAN dataset and the registry entry, built from plain values."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pydicom
import pytest
from archive.data.xds_registry import from_json, to_json
from archive.dicom.ian import notification_dataset
from archive.dicom.manifest import build_manifest, encode, manifest_uids
from archive.model.registration import (
    FORMAT_CODE,
    KOS_SOP_CLASS,
    AffinityDomain,
    ArchiveIdentity,
    CodeSet,
    OrganisationRegistration,
    RegistrationProfile,
    StudyContent,
    StudyInstance,
    StudyPatient,
    parse_code,
)
from archive.model.xds import Association, AssociationType, DocumentEntry
from archive.services.availability import backoff_seconds, notice_of
from archive.services.registration import RegistrationService, StoredManifest

CT = "1.2.840.10008.5.1.4.1.1.2"
SR = "1.2.840.10008.5.1.4.1.1.88.22"
ARCHIVE = ArchiveIdentity("1.2.246.10.1.99", "1.2.246.10.1.99.1", "1.2.246.10.1.99.2", "ARCHIVE")
DOMAIN_CODES = CodeSet(
    class_code=parse_code("IMG^1.2.3^Imaging"),
    type_code=parse_code("STUDY^1.2.3^Study"),
    confidentiality_codes=(parse_code("N^2.16.840.1.113883.5.25^normal"),),
    healthcare_facility_type=parse_code("HOSP^1.2.4^Hospital"),
    practice_setting=parse_code("RAD^1.2.5^Radiology"),
    content_type=parse_code("IMG^1.2.6^Imaging"),
)


def profile(**org: object) -> RegistrationProfile:
    return RegistrationProfile.merge(
        ARCHIVE,
        AffinityDomain("1.2.246.21", DOMAIN_CODES),
        OrganisationRegistration("1.2.246.10.7.10", "1.2.246.21", **org),  # type: ignore[arg-type]
        "Sairaala Ääkkönen",
    )


def content(**changes: object) -> StudyContent:
    instances = (
        StudyInstance(CT, "1.2.3.4.1.1", "1.2.3.4.1", "CT", True, "20260715", "101500"),
        StudyInstance(CT, "1.2.3.4.1.2", "1.2.3.4.1", "CT", True, "20260715", "102000"),
        StudyInstance(
            SR,
            "1.2.3.4.2.1",
            "1.2.3.4.2",
            "SR",
            False,
            performed_procedure_step=("1.2.840.10008.3.1.2.3.3", "1.2.3.9"),
            procedure_code=parse_code("CTHEAD^99LOCAL^CT head"),
            anatomic_region=parse_code("69536005^SCT^Head"),
        ),
    )
    values: dict[str, object] = {
        "study_uid": "1.2.3.4",
        "org_oid": "1.2.246.10.7.10",
        "patient": StudyPatient("020516C903K", "1.2.246.21", "Äärelä^Åsa", None, "19160502", "F"),
        "instances": instances,
        "study_date": "20260715",
        "study_time": "100000",
        "accession_number": "A123",
        "accession_issuer": "1.2.246.10.7.14",
        "study_description": "CT pää",
    }
    values.update(changes)
    return StudyContent(**values)  # type: ignore[arg-type]


def test_manifest_is_a_valid_kos_listing_every_instance_by_series(tmp_path: Path) -> None:
    # Given a study of two series, one of them a non-image object, and a patient with a Finnish name
    created = datetime(2026, 7, 15, 9, 0, tzinfo=UTC)
    ds = build_manifest(content(), profile(), version=2, created=created)
    path = tmp_path / "kos.dcm"
    path.write_bytes(encode(ds))
    # Then dciodvfy finds no error and dsrdump prints the Manifest with every reference
    check = subprocess.run(["/usr/bin/dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    assert [x for x in (check.stdout + check.stderr).splitlines() if x.startswith("Error")] == []
    dump = subprocess.run(["/usr/bin/dsrdump", str(path)], capture_output=True, text=True, check=True).stdout
    assert '(,,"Manifest")' in dump
    assert dump.count("contains IMAGE") == 2 and dump.count("contains COMPOSITE") == 1
    # And the file says what the archive knows, in local time with the offset, from the operator's root
    read = pydicom.dcmread(path)
    assert read.SOPClassUID == KOS_SOP_CLASS and read.Modality == "KO"
    assert str(read.PatientName) == "Äärelä^Åsa" and read.IssuerOfPatientID == "1.2.246.21"
    assert (read.ContentDate, read.ContentTime, read.TimezoneOffsetFromUTC) == ("20260715", "120000", "+0300")
    assert read.SOPInstanceUID.startswith(ARCHIVE.uid_root + ".")
    assert read.SeriesInstanceUID.startswith(ARCHIVE.uid_root + ".") and read.InstanceNumber == 2
    assert read.IssuerOfAccessionNumberSequence[0].UniversalEntityID == "1.2.246.10.7.14"
    series = read.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
    assert [
        (s.SeriesInstanceUID, s.RetrieveAETitle, s.RetrieveLocationUID, len(s.ReferencedSOPSequence))
        for s in series
    ] == [
        ("1.2.3.4.1", "ARCHIVE", ARCHIVE.repository_unique_id, 2),
        ("1.2.3.4.2", "ARCHIVE", ARCHIVE.repository_unique_id, 1),
    ]


def test_manifest_uids_are_derived_from_study_version_and_content() -> None:
    first = manifest_uids(ARCHIVE.uid_root, "1.2.3.4", 1, "abc")
    assert manifest_uids(ARCHIVE.uid_root, "1.2.3.4", 1, "abc") == first
    assert manifest_uids(ARCHIVE.uid_root, "1.2.3.4", 2, "abc") != first
    assert manifest_uids(ARCHIVE.uid_root, "1.2.3.4", 1, "abd") != first
    assert all(len(uid) <= 64 for uid in first)


def test_fingerprint_changes_with_instances_and_patient_but_not_order() -> None:
    base = content()
    assert content(instances=tuple(reversed(base.instances))).fingerprint() == base.fingerprint()
    assert content(instances=base.instances[:2]).fingerprint() != base.fingerprint()
    renamed = StudyPatient("020516C903K", "1.2.246.21", "Virtanen^Åsa", None, "19160502", "F")
    assert content(patient=renamed).fingerprint() != base.fingerprint()


def test_ian_lists_each_instance_online_with_its_series_and_the_performed_procedure_step() -> None:
    ds = notification_dataset(notice_of(content(), "ARCHIVE"))
    assert ds.StudyInstanceUID == "1.2.3.4"
    listed = {
        (
            s.SeriesInstanceUID,
            i.ReferencedSOPClassUID,
            i.ReferencedSOPInstanceUID,
            i.InstanceAvailability,
            i.RetrieveAETitle,
        )
        for s in ds.ReferencedSeriesSequence
        for i in s.ReferencedSOPSequence
    }
    assert listed == {
        ("1.2.3.4.1", CT, "1.2.3.4.1.1", "ONLINE", "ARCHIVE"),
        ("1.2.3.4.1", CT, "1.2.3.4.1.2", "ONLINE", "ARCHIVE"),
        ("1.2.3.4.2", SR, "1.2.3.4.2.1", "ONLINE", "ARCHIVE"),
    }
    [pps] = ds.ReferencedPerformedProcedureStepSequence
    assert (pps.ReferencedSOPClassUID, pps.ReferencedSOPInstanceUID) == ("1.2.840.10008.3.1.2.3.3", "1.2.3.9")
    # And without performed procedure steps the sequence is present and empty (type 2)
    plain = content(instances=content().instances[:2])
    assert (
        list(notification_dataset(notice_of(plain, "ARCHIVE")).ReferencedPerformedProcedureStepSequence) == []
    )


def test_ian_says_unavailable_for_rejected_instances_and_the_fingerprint_ignores_them() -> None:
    # Given a study whose first CT instance a rejection note hides
    full = content().instances
    withdrawn = content(instances=full[1:], withdrawn=full[:1])
    # Then the IAN lists it UNAVAILABLE and the others ONLINE, in the same series item
    ds = notification_dataset(notice_of(withdrawn, "ARCHIVE"))
    listed = {
        i.ReferencedSOPInstanceUID: (s.SeriesInstanceUID, i.InstanceAvailability)
        for s in ds.ReferencedSeriesSequence
        for i in s.ReferencedSOPSequence
    }
    assert listed == {
        "1.2.3.4.1.1": ("1.2.3.4.1", "UNAVAILABLE"),
        "1.2.3.4.1.2": ("1.2.3.4.1", "ONLINE"),
        "1.2.3.4.2.1": ("1.2.3.4.2", "ONLINE"),
    }
    assert len(ds.ReferencedSeriesSequence) == 2
    # And the registration version's fingerprint is that of the visible instances only
    assert withdrawn.fingerprint() == content(instances=full[1:]).fingerprint() != content().fingerprint()


def test_document_entry_carries_the_configured_codes_and_utc_times() -> None:
    # Given an organisation in Helsinki overriding the practice setting, and a summer study
    org_codes = CodeSet(practice_setting=parse_code("NEURO^1.2.5^Neuroradiology"))
    now = datetime(2026, 7, 15, 9, 30, 12, 345678, tzinfo=UTC)
    entry = RegistrationService.document_entry(
        content(),
        profile(codes=org_codes),
        StoredManifest("1.2.246.10.1.99.1.77", "ab" * 20, 1234),
        version=1,
        now=now,
        previous=None,
    )
    assert entry.patient_id == "020516C903K^^^&1.2.246.21&ISO"
    assert entry.practice_setting.code == "NEURO" and entry.class_code == DOMAIN_CODES.class_code
    # The Procedure Code Sequence gives the typeCode; the anatomic region joins the modalities
    assert entry.type_code == parse_code("CTHEAD^99LOCAL^CT head")
    assert [(c.code, c.scheme) for c in entry.event_codes] == [
        ("CT", "1.2.840.10008.2.16.4"),
        ("SR", "1.2.840.10008.2.16.4"),
        ("69536005", "SCT"),
    ]
    assert entry.format_code == FORMAT_CODE and entry.mime_type == "application/dicom"
    # 10:00 and 10:20 in Helsinki in July are 07:00 and 07:20 UTC; creation time to the second
    assert entry.service_start_time == datetime(2026, 7, 15, 7, 0, tzinfo=UTC)
    assert entry.service_stop_time == datetime(2026, 7, 15, 7, 20, tzinfo=UTC)
    assert entry.creation_time == datetime(2026, 7, 15, 9, 30, 12, tzinfo=UTC)
    assert entry.authors[0].institutions == ("Sairaala Ääkkönen^^^^^^^^^1.2.246.10.7.10",)
    assert entry.reference_ids == (
        "A123^^^&1.2.246.10.7.14&ISO^urn:ihe:iti:xds:2013:accession",
        "1.2.3.4^^^^urn:ihe:iti:xds:2016:studyInstanceUID",
    )
    assert entry.logical_id == entry.entry_uuid and entry.entry_uuid.startswith("urn:uuid:")
    # And it survives the registry's JSON form unchanged
    assert from_json(DocumentEntry, to_json(entry)) == entry


def test_registry_json_round_trip_of_an_association_with_slots() -> None:
    association = Association(
        "urn:uuid:1",
        AssociationType.REPLACE,
        "urn:uuid:2",
        "urn:uuid:3",
        "X^^^&1.2&ISO",
        slots=(("a", ("b", "c")),),
    )
    assert from_json(Association, to_json(association)) == association


def test_incomplete_code_sets_are_refused() -> None:
    with pytest.raises(ValueError, match="class_code"):
        RegistrationProfile.merge(
            ARCHIVE,
            AffinityDomain("1.2.246.21", CodeSet(type_code=DOMAIN_CODES.type_code)),
            OrganisationRegistration("1.2.3", "1.2.246.21"),
            "Org",
        )


def test_configuration_checks_time_zone_and_stability() -> None:
    with pytest.raises(Exception, match="Europe/Helsingfors"):
        OrganisationRegistration("1.2.3", "1.2.246.21", timezone="Europe/Helsingfors")
    with pytest.raises(ValueError):
        OrganisationRegistration("1.2.3", "1.2.246.21", stability_seconds=3600)


def test_backoff_doubles_from_the_base_up_to_twelve_hours() -> None:
    assert [backoff_seconds(n, 30) for n in (1, 2, 3, 4)] == [30, 60, 120, 240]
    assert backoff_seconds(30, 30) == 12 * 3600


def test_the_registry_offers_every_read_the_xds_query_service_expects() -> None:
    # The XDS stored-query service reads the registry through a Protocol; XdsRegistry implements it.
    import inspect

    from archive.data.xds_registry import XdsRegistry
    from archive.services.xds_query import XdsRegistryReader

    expected = {
        name: list(inspect.signature(member).parameters)
        for name, member in vars(XdsRegistryReader).items()
        if callable(member) and not name.startswith("_")
    }
    assert len(expected) == 11
    offered = {name: list(inspect.signature(getattr(XdsRegistry, name)).parameters) for name in expected}
    assert offered == expected
