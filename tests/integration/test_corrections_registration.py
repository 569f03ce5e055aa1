"""IOCM rejections and revokes reach the customer's registry and PACS, over real sockets.

DCMTK storescu sends a study and highdicom rejection notes; a pynetdicom SCU requests storage
commitment; a pynetdicom IAN SCP at DEMO_PACS receives each notification; ITI-18 and RAD-69 are
asked over HTTP with the demo identity provider's assertions; the manifests are read from S3.
"""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
from archive.data.models import Registration
from archive.data.objects import manifest_key
from archive.data.xds_registry import XdsRegistry
from archive.model.xds import EntryStatus
from lxml import etree

from local.cloud import LocalCloud
from local.demo_idp import soap_request
from tests.integration.test_corrections import store_status, uid
from tests.integration.test_registration import demo_pacs, hetu, registered_version, send_and_commit
from tests.integration.test_xds_interface import assertion, find, mime_parts, post, rad69_request, soap_body
from tests.support.cloud import admin_cli, s3
from tests.support.dicom import HETU_ISSUER, ct_dataset, new_uid, write
from tests.support.ian import IanReceiver
from tests.support.rejection import rejection_note, write_note
from tests.support.xds_http import error_codes, unique_ids

__all__ = ["demo_pacs"]  # the IAN receiver fixture


def availability(receiver: IanReceiver, study_uid: str) -> dict[str, str]:
    """SOP Instance UID -> Instance Availability of the next IAN for the study."""
    notice = receiver.wait_for(study_uid, timeout=90)
    assert notice.calling_ae == "ARCHIVE"
    return {sop: value[2] for sop, value in notice.instances().items()}


def manifest_instances(cloud: LocalCloud, manifest_uid: str) -> set[str]:
    assert cloud.settings is not None
    body = s3(cloud).get_object(Bucket=cloud.settings.bucket, Key=manifest_key(manifest_uid))["Body"].read()
    manifest = pydicom.dcmread(io.BytesIO(body))
    [evidence] = manifest.CurrentRequestedProcedureEvidenceSequence
    return {
        str(i.ReferencedSOPInstanceUID)
        for s in evidence.ReferencedSeriesSequence
        for i in s.ReferencedSOPSequence
    }


def iti18_manifests(cloud: LocalCloud, cx: str) -> set[str]:
    """The uniqueIds of the patient's Approved documents, as ITI-18 answers them."""
    response = find(cloud, cx)
    assert response.status_code == 200
    body = soap_body(response)
    assert body.get("status", "").endswith("Success"), etree.tostring(body)[:2000]
    return set(unique_ids(body))


def rad69(cloud: LocalCloud, study: dict[str, object]) -> tuple[list[str], list[str]]:
    """(SOP Instance UIDs returned, error codes) of a RAD-69 of every instance of the study."""
    data = soap_request(
        rad69_request(study, ["1.2.840.10008.1.2.1"]),
        action="urn:ihe:rad:2009:RetrieveImagingDocumentSet",
        assertion=assertion(str(study["cx"])),
    )
    response = post(cloud, "/xds/imaging", data)
    assert response.status_code == 200
    parts = mime_parts(response)
    envelope = etree.fromstring(parts[0][1])
    got = [str(pydicom.dcmread(io.BytesIO(p)).SOPInstanceUID) for _, p in parts[1:]]
    return got, error_codes(envelope)


def test_rejection_withdraws_instances_from_registration_ian_and_xds_until_revoked(
    cloud: LocalCloud, workdir: Path, demo_pacs: IanReceiver
) -> None:
    assert cloud.settings is not None
    # Given a committed, registered three-instance study, confirmed ONLINE by IAN
    pid, study_uid, series_uid = hetu(), new_uid(), new_uid()
    files = [
        write(
            ct_dataset(patient_id=pid, study_uid=study_uid, series_uid=series_uid, instance_number=i + 1),
            workdir,
        )
        for i in range(3)
    ]
    sops = [uid(f) for f in files]
    cx = f"{pid}^^^&{HETU_ISSUER}&ISO"
    study = {"cx": cx, "study_uid": study_uid, "series_uid": series_uid, "sops": sops}
    send_and_commit(cloud, files)
    assert availability(demo_pacs, study_uid) == dict.fromkeys(sops, "ONLINE")
    first = registered_version(study_uid, 1)
    registry = XdsRegistry(cloud.settings)

    # When the modality rejects two of them (quality reasons) with a note sent by storescu
    note = write_note(rejection_note(files[:2], "113001"), workdir)
    assert store_status(cloud, note, "DEMO_MOD") == 0x0000

    # Then an IAN says UNAVAILABLE for the two and ONLINE for the third
    assert availability(demo_pacs, study_uid) == {
        sops[0]: "UNAVAILABLE",
        sops[1]: "UNAVAILABLE",
        sops[2]: "ONLINE",
    }
    # And a second version lists only the third, replacing the first, which is Deprecated
    second = registered_version(study_uid, 2)
    assert second.state == "REGISTERED"
    assert manifest_instances(cloud, second.manifest_uid) == {sops[2]}
    [old] = registry.documents_by_uuid([first.entry_uuid])
    assert old.status is EntryStatus.DEPRECATED
    # And ITI-18 finds the new manifest only, and RAD-69 returns only the third instance
    found = iti18_manifests(cloud, cx)
    assert second.manifest_uid in found and first.manifest_uid not in found
    got, errors = rad69(cloud, study)
    assert got == [sops[2]]
    assert errors == ["XDSDocumentUniqueIdError"] * 2

    # When the last instance is rejected too (wrong worklist entry)
    last = write_note(rejection_note(files[2:], "113038"), workdir)
    assert store_status(cloud, last, "DEMO_MOD") == 0x0000
    # Then an IAN says UNAVAILABLE for every instance
    assert availability(demo_pacs, study_uid) == dict.fromkeys(sops, "UNAVAILABLE")
    # And the study's entry is Deprecated with nothing replacing it: ITI-18 finds no manifest of it
    third = registered_version(study_uid, 3)
    assert third.state == "WITHDRAWN"
    [entry] = registry.documents_by_uuid([second.entry_uuid])
    assert entry.status is EntryStatus.DEPRECATED
    assert not {first.manifest_uid, second.manifest_uid} & iti18_manifests(cloud, cx)
    assert [
        d
        for d in registry.documents_by_patient(cx, [EntryStatus.APPROVED])
        if d.study_instance_uid == study_uid
    ] == []
    assert rad69(cloud, study) == ([], ["XDSDocumentUniqueIdError"] * 3)

    # When an operator revokes the first note with the admin CLI
    revoked = admin_cli(
        cloud, "rejection", "revoke", uid(note), "--by", "Operator Olli", "--reason", "ticket 7"
    )
    assert revoked.returncode == 0, revoked.stderr
    # Then an IAN says ONLINE for the two restored instances (the third stays rejected)
    assert availability(demo_pacs, study_uid) == {
        sops[0]: "ONLINE",
        sops[1]: "ONLINE",
        sops[2]: "UNAVAILABLE",
    }
    # And a fourth version, Approved, lists them; ITI-18 and RAD-69 find them again
    fourth = registered_version(study_uid, 4)
    assert fourth.state == "REGISTERED"
    assert manifest_instances(cloud, fourth.manifest_uid) == set(sops[:2])
    [entry] = registry.documents_by_uuid([fourth.entry_uuid])
    assert entry.status is EntryStatus.APPROVED and entry.study_instance_uid == study_uid
    assert fourth.manifest_uid in iti18_manifests(cloud, cx)
    got, errors = rad69(cloud, study)
    assert got == sops[:2] and errors == ["XDSDocumentUniqueIdError"]
    assert Registration.get(study_uid).version == 4
