"""C-STORE through the real interface: DCMTK storescu and a pynetdicom SCU against the local cloud."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import pydicom
import pytest
from archive.data.models import Instance, Patient, Series, Study
from archive.data.objects import instance_key
from archive.dicom.structure import dataset_offset
from archive.model.organisations import AEInfo, OrganisationInfo
from botocore.exceptions import ClientError
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import MRImageStorage, Verification  # type: ignore[attr-defined]

from local.cloud import LocalCloud
from local.resources import BUCKET
from tests.support.cloud import dcmtk, locked_copy, received, s3, storescu, wait_until
from tests.support.dicom import bundled_storage_files, ct_dataset, new_uid, write
from tests.support.scu import Modality, part10, raw_sending


def _dataset_bytes(raw: bytes) -> bytes:
    """The dataset part of a Part-10 file (what travels in C-STORE), without preamble and meta."""
    return raw[dataset_offset(io.BytesIO(raw)) :]


def _stored(cloud: LocalCloud, sop_instance_uid: str) -> bytes:
    locked_copy(cloud, instance_key(sop_instance_uid))
    return s3(cloud).get_object(Bucket=BUCKET, Key=instance_key(sop_instance_uid))["Body"].read()


def _assert_same_content(stored: pydicom.Dataset, sent: pydicom.Dataset) -> None:
    """Equal values; encapsulated fragments may differ only by DCMTK's even-length padding byte,
    and DCMTK drops Data Set Trailing Padding (FFFC,FFFC) when it sends."""
    from pydicom.encaps import generate_fragments

    pixels_stored = stored["PixelData"] if "PixelData" in stored else None  # noqa: SIM401 - the element, not its value
    pixels_sent = sent["PixelData"] if "PixelData" in sent else None  # noqa: SIM401
    for ds in (stored, sent):
        if "PixelData" in ds:
            del ds.PixelData
        if 0xFFFCFFFC in ds:
            del ds[0xFFFCFFFC]
    assert stored == sent
    if pixels_sent is None:
        assert pixels_stored is None
    elif pixels_sent.is_undefined_length:
        assert pixels_stored is not None
        ours = [f.rstrip(b"\0") for f in generate_fragments(pixels_stored.value)]
        theirs = [f.rstrip(b"\0") for f in generate_fragments(pixels_sent.value)]
        assert ours == theirs
    else:
        assert pixels_stored is not None and pixels_stored.value == pixels_sent.value


def _fresh_copy(source: Path, directory: Path) -> Path:
    """The bundled file with new Study/Series/SOP Instance UIDs, keeping its transfer syntax.

    pydicom's samples reuse UIDs across files (one image in several syntaxes); fresh UIDs keep each
    file a distinct instance. Pixel data is written back as it was (no re-encoding).
    """
    ds = pydicom.dcmread(source)
    ds.StudyInstanceUID = new_uid()
    ds.SeriesInstanceUID = new_uid()
    ds.SOPInstanceUID = new_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    path = directory / f"{source.stem}-{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


# storescu proposes one compressed syntax per run; this is the option that proposes each one.
STORESCU_PROPOSAL = {
    "1.2.840.10008.1.2": "-xi",
    "1.2.840.10008.1.2.1": "-xe",
    "1.2.840.10008.1.2.2": "-xb",
    "1.2.840.10008.1.2.1.99": "-xd",
    "1.2.840.10008.1.2.4.50": "-xy",
    "1.2.840.10008.1.2.4.51": "-xx",
    "1.2.840.10008.1.2.4.70": "-xs",
    "1.2.840.10008.1.2.4.80": "-xt",
    "1.2.840.10008.1.2.4.81": "-xu",
    "1.2.840.10008.1.2.4.90": "-xv",
    "1.2.840.10008.1.2.4.91": "-xw",
    "1.2.840.10008.1.2.5": "-xr",
}


def test_every_valid_storage_object_pydicom_ships_is_stored_exactly_as_sent(
    cloud: LocalCloud, workdir: Path
) -> None:
    # Given every whole storage object pydicom ships, each as a distinct instance
    sources = bundled_storage_files()
    by_syntax: dict[str, list[Path]] = {}
    for source in sources:
        by_syntax.setdefault(source.transfer_syntax_uid, []).append(_fresh_copy(source.path, workdir))
    assert len(sources) >= 50 and len(by_syntax) >= 10
    assert set(by_syntax) <= set(STORESCU_PROPOSAL), "a syntax storescu cannot propose"
    for syntax, files in by_syntax.items():
        # When a modality sends them with DCMTK storescu, proposing the files' own syntax only
        result = storescu(cloud, files, extra=(STORESCU_PROPOSAL[syntax], "-R", "-nh"))
        assert "Converting transfer syntax" not in result.stderr or "-> " + syntax not in result.stderr
        responses = re.findall(r"Received Store Response \(([^)]*)\)", result.stderr)
        assert len(responses) == len(files), result.stderr[-3000:]
        for path, response in zip(files, responses, strict=True):
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            if str(ds.get("PatientID", "")).strip():
                # Then each file with a Patient ID is stored (the organisation's default issuer applies)
                assert response == "Success", (path.name, response)
                # with the content of the file (storescu may re-encode lengths; values are equal)
                stored = pydicom.dcmread(io.BytesIO(_stored(cloud, ds.SOPInstanceUID)))
                _assert_same_content(stored, pydicom.dcmread(path))
                assert stored.file_meta.TransferSyntaxUID == syntax
            else:
                # and one without a Patient ID is refused (0xA777, which DCMTK calls "Refused: OutOfResources")
                assert response.startswith("Refused"), (path.name, response)
                assert _not_stored(cloud, ds.SOPInstanceUID)
    # And every stored instance is indexed with its transfer syntax
    cloud.drain()
    for syntax, files in by_syntax.items():
        for path in files:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            if str(ds.get("PatientID", "")).strip():
                item = Instance.get(ds.SOPInstanceUID)
                assert item.transfer_syntax_uid == syntax
                assert item.sop_class_uid == ds.SOPClassUID


def test_datasets_are_stored_byte_for_byte_as_received(cloud: LocalCloud, workdir: Path) -> None:
    # Given every bundled storage object, sent raw (pynetdicom streams a file's dataset bytes as they are)
    from pynetdicom import AE

    files = [_fresh_copy(f.path, workdir) for f in bundled_storage_files()]
    files = [
        p for p in files if str(pydicom.dcmread(p, stop_before_pixels=True).get("PatientID", "")).strip()
    ]
    ae = AE(ae_title="DEMO_MOD")
    for path in files:
        meta = pydicom.dcmread(path, stop_before_pixels=True).file_meta
        ae.add_requested_context(meta.MediaStorageSOPClassUID, meta.TransferSyntaxUID)
    assert len(ae.requested_contexts) <= 128
    assoc = ae.associate("127.0.0.1", cloud.dicom_port, ae_title="ARCHIVE")
    try:
        with raw_sending():
            statuses = [int(assoc.send_c_store(path).Status) for path in files]
    finally:
        assoc.release()
    # Then each is stored, and the dataset in S3 is byte for byte the dataset of the file
    assert statuses == [0] * len(files)
    for path in files:
        sop = pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
        assert _dataset_bytes(_stored(cloud, sop)) == _dataset_bytes(path.read_bytes()), path.name


def test_index_holds_the_attributes_query_and_xds_need(cloud: LocalCloud) -> None:
    # Given two series of one study, sent over one association
    study_uid, series_a, series_b = new_uid(), new_uid(), new_uid()
    datasets = [
        ct_dataset(study_uid=study_uid, series_uid=series_a, instance_number=1, patient_name="Äyräpää^Åsa"),
        ct_dataset(study_uid=study_uid, series_uid=series_a, instance_number=2, patient_name="Äyräpää^Åsa"),
        ct_dataset(
            study_uid=study_uid,
            series_uid=series_b,
            instance_number=1,
            modality="MR",
            patient_name="Äyräpää^Åsa",
        ),
    ]
    modality = Modality(cloud.dicom_port)
    try:
        assert [modality.store(ds) for ds in datasets] == [0, 0, 0]
    finally:
        modality.release()
    # Then the study aggregates are right
    study = wait_until(lambda: (s := Study.get(study_uid)) and s.number_of_instances == 3 and s)
    assert study.number_of_series == 2
    assert study.modalities == {"CT", "MR"}
    assert study.patient_key == "020516C903K^^^1.2.246.21"
    assert study.patient_name == "Äyräpää^Åsa"
    assert study.study_date == "20260115"
    assert study.accession_number == "ACC001"
    assert study.referring_physician_name == "Lääkäri^Liisa"
    assert study.specific_character_set == "ISO_IR 192"
    assert study.org_oid == "1.2.246.10.12345678.10"
    assert study.total_bytes == sum(Instance.get(ds.SOPInstanceUID).size for ds in datasets)
    # And the series and instance records
    assert Series.get(study_uid, series_a).number_of_instances == 2
    assert Series.get(study_uid, series_b).modality == "MR"
    instance = Instance.get(datasets[0].SOPInstanceUID)
    assert instance.sending_ae == "DEMO_MOD"
    assert (instance.rows, instance.columns) == (16, 16)
    assert instance.s3_key == instance_key(datasets[0].SOPInstanceUID)
    assert len(instance.sha256) == 64
    in_study = list(Instance.by_study.query(study_uid, Instance.series_sop.startswith(series_a)))
    assert {i.sop_instance_uid for i in in_study} == {datasets[0].SOPInstanceUID, datasets[1].SOPInstanceUID}
    assert Patient.get("020516C903K^^^1.2.246.21").patient_id == "020516C903K"


def test_s3_object_carries_checksum_and_provenance_metadata(cloud: LocalCloud) -> None:
    ds = ct_dataset()
    modality = Modality(cloud.dicom_port)
    try:
        assert modality.store(ds) == 0
    finally:
        modality.release()
    head = locked_copy(cloud, instance_key(ds.SOPInstanceUID), ChecksumMode="ENABLED")
    meta = head["Metadata"]
    assert meta["sending-ae"] == "DEMO_MOD"
    assert meta["org-oid"] == "1.2.246.10.12345678.10"
    assert meta["received-at"].endswith("+00:00")
    import base64

    assert base64.b64decode(head["ChecksumSHA256"]).hex() == meta["sha256"]
    assert head["ObjectLockMode"] == "GOVERNANCE"


def test_identical_resend_succeeds_without_a_second_object(cloud: LocalCloud, workdir: Path) -> None:
    path = write(ct_dataset(), workdir)
    sop = pydicom.dcmread(path).SOPInstanceUID
    assert storescu(cloud, [path]).returncode == 0
    # When the same file is sent again
    again = storescu(cloud, [path])
    # Then it succeeds, and S3 still holds exactly one version
    assert "Received Store Response (Success)" in again.stderr
    cloud.drain()  # both copies into the locked bucket have run
    versions = s3(cloud).list_object_versions(Bucket=BUCKET, Prefix=instance_key(sop)).get("Versions", [])
    assert len(versions) == 1


def test_different_content_under_a_stored_uid_is_refused_and_the_original_kept(cloud: LocalCloud) -> None:
    original = ct_dataset()
    changed = ct_dataset(
        sop_instance_uid=original.SOPInstanceUID,
        study_uid=original.StudyInstanceUID,
        series_uid=original.SeriesInstanceUID,
        instance_number=7,
    )
    modality = Modality(cloud.dicom_port)
    try:
        assert modality.store(original) == 0
        before = _stored(cloud, original.SOPInstanceUID)
        status = modality.status_dataset(changed)
    finally:
        modality.release()
    assert status.Status == 0x0124
    assert status.ErrorComment.startswith("different content archived under this UID")
    assert _stored(cloud, original.SOPInstanceUID) == before


def test_locked_object_cannot_be_deleted(cloud: LocalCloud) -> None:
    ds = ct_dataset()
    modality = Modality(cloud.dicom_port)
    try:
        assert modality.store(ds) == 0
    finally:
        modality.release()
    client = s3(cloud)
    key = instance_key(ds.SOPInstanceUID)
    version = locked_copy(cloud, key)["VersionId"]
    # When anyone tries to delete the stored version
    with pytest.raises(ClientError) as refused:
        client.delete_object(Bucket=BUCKET, Key=key, VersionId=version)
    # Then S3 refuses and the object is still there
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    assert client.head_object(Bucket=BUCKET, Key=key, VersionId=version)["ContentLength"] > 0


# --- validation statuses ----------------------------------------------------------------------


def _send(cloud: LocalCloud, ds: object, ae_title: str = "DEMO_MOD") -> object:
    modality = Modality(cloud.dicom_port, ae_title=ae_title)
    try:
        return modality.status_dataset(ds)  # type: ignore[arg-type]
    finally:
        modality.release()


def _not_stored(cloud: LocalCloud, sop: str) -> bool:
    return not received(cloud, instance_key(sop))


@pytest.mark.parametrize("missing", ["SeriesInstanceUID", "StudyInstanceUID"])
def test_missing_required_uid_is_a900(cloud: LocalCloud, missing: str) -> None:
    ds = ct_dataset()
    delattr(ds, missing)
    status = _send(cloud, ds)
    assert status.Status == 0xA900
    assert missing in status.ErrorComment
    assert _not_stored(cloud, ds.SOPInstanceUID)


def test_invalid_uid_is_a900(cloud: LocalCloud) -> None:
    ds = ct_dataset(series_uid="1.2.03.4")
    status = _send(cloud, ds)
    assert status.Status == 0xA900


def test_dataset_of_another_sop_class_than_the_request_is_a900(cloud: LocalCloud, workdir: Path) -> None:
    # Given a file whose meta (hence the C-STORE request) says CT but whose dataset says MR
    from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

    ds = ct_dataset()
    ds.SOPClassUID = MRImageStorage
    encoded = _dataset_bytes(write(ds, workdir).read_bytes())
    path = part10(
        CTImageStorage, ds.SOPInstanceUID, ExplicitVRLittleEndian, encoded, workdir / "mismatch.dcm"
    )
    # When it is sent raw (the request's SOP class comes from the meta)
    modality = Modality(cloud.dicom_port)
    try:
        with raw_sending():
            status = modality.status_dataset(path)
    finally:
        modality.release()
    # Then the archive sees the mismatch
    assert status.Status == 0xA900
    assert status.ErrorComment.startswith("SOP Class differs from the request")
    assert _not_stored(cloud, ds.SOPInstanceUID)


def test_image_without_pixel_data_is_a900(cloud: LocalCloud) -> None:
    ds = ct_dataset()
    del ds.PixelData
    assert _send(cloud, ds).Status == 0xA900


def test_missing_patient_id_is_a777(cloud: LocalCloud) -> None:
    ds = ct_dataset(patient_id="")
    status = _send(cloud, ds)
    assert status.Status == 0xA777
    assert _not_stored(cloud, ds.SOPInstanceUID)


def test_untrusted_issuer_is_a777(cloud: LocalCloud) -> None:
    ds = ct_dataset(issuer="1.2.3.4.5.6.7")
    status = _send(cloud, ds)
    assert status.Status == 0xA777
    assert status.ErrorComment.startswith("untrusted issuer 1.2.3.4.5.6.7")


def test_no_issuer_and_no_default_issuer_is_a777(cloud: LocalCloud) -> None:
    # Given an organisation with trusted issuers but no default issuer
    org = OrganisationInfo("1.2.246.10.87654321.10", "Strict Clinic", ("1.2.246.21",))
    cloud.register(org, AEInfo("STRICT_MOD", org.oid, "127.0.0.1", 1, roles=("store",)))
    # When it sends an image with a Patient ID but no issuer
    status = _send(cloud, ct_dataset(issuer=None), ae_title="STRICT_MOD")
    # Then the archive refuses it
    assert status.Status == 0xA777
    # And with the hetu issuer it is accepted
    assert _send(cloud, ct_dataset(), ae_title="STRICT_MOD").Status == 0


def test_second_patient_for_a_study_is_a778(cloud: LocalCloud) -> None:
    study_uid = new_uid()
    first = ct_dataset(study_uid=study_uid, patient_id="020516C903K")
    second = ct_dataset(study_uid=study_uid, patient_id="131052-308T")
    assert _send(cloud, first).Status == 0
    status = _send(cloud, second)
    assert status.Status == 0xA778
    assert _not_stored(cloud, second.SOPInstanceUID)


def test_study_of_another_organisation_cannot_be_claimed_through_a_shared_patient_key(
    cloud: LocalCloud,
) -> None:
    # Given a study of the demo hospital (organisation A) for a patient with a national ID
    study_uid = new_uid()
    first = ct_dataset(study_uid=study_uid, patient_id="020516C903K")
    assert _send(cloud, first).Status == 0
    cloud.drain()
    before = Study.get(study_uid, consistent_read=True).attribute_values
    # And organisation B, which trusts the same national issuer
    org_b = OrganisationInfo("1.2.246.10.33334444.10", "Other Hospital", ("1.2.246.21",))
    cloud.register(org_b, AEInfo("OTHER_MOD", org_b.oid, "127.0.0.1", 1, roles=("store",)))
    # When B sends an instance with A's Study Instance UID and the same patient
    intruder = ct_dataset(study_uid=study_uid, patient_id="020516C903K", accession="B-ACC")
    status = _send(cloud, intruder, ae_title="OTHER_MOD")
    # Then it is refused as not authorised, saying why, and nothing of A's changes
    assert status.Status == 0x0124
    assert status.ErrorComment.startswith("Study is controlled by another organisation")
    assert _not_stored(cloud, intruder.SOPInstanceUID)
    # ... also when B sends again (this listener remembers the claims it has seen)
    assert _send(cloud, intruder, ae_title="OTHER_MOD").Status == 0x0124
    cloud.drain()
    assert Study.get(study_uid, consistent_read=True).attribute_values == before
    # And A goes on adding to its study
    more = ct_dataset(study_uid=study_uid, patient_id="020516C903K", instance_number=2)
    assert _send(cloud, more).Status == 0


def test_ae_without_store_role_is_not_authorised(cloud: LocalCloud) -> None:
    org = OrganisationInfo("1.2.246.10.11112222.10", "Viewer Only", ("1.2.246.21",))
    cloud.register(org, AEInfo("VIEWER", org.oid, "127.0.0.1", 1, roles=("query",)))
    assert _send(cloud, ct_dataset(), ae_title="VIEWER").Status == 0x0124


# --- association acceptance -------------------------------------------------------------------


def test_unregistered_calling_ae_is_rejected_at_association(cloud: LocalCloud) -> None:
    result = dcmtk("echoscu", "-aet", "STRANGER", "-aec", "ARCHIVE", "127.0.0.1", str(cloud.dicom_port))
    assert result.returncode != 0
    assert "Calling AE Title Not Recognized" in result.stderr


def _associate_from(cloud: LocalCloud, ae_title: str, address: str) -> Any:
    ae = AE(ae_title=ae_title)
    ae.add_requested_context(Verification)
    return ae.associate("127.0.0.1", cloud.dicom_port, ae_title="ARCHIVE", bind_address=(address, 0))


def test_registered_title_from_another_address_is_rejected(cloud: LocalCloud) -> None:
    # Given DEMO_MOD, registered at 127.0.0.1
    # When a peer calls with its title from another loopback address
    assoc = _associate_from(cloud, "DEMO_MOD", "127.0.0.2")
    # Then the association is rejected: permanent, by the service user, calling AE not recognised
    assert assoc.is_rejected
    rejection = assoc.acceptor.primitive
    assert (rejection.result, rejection.result_source, rejection.diagnostic) == (0x01, 0x01, 0x03)
    # And from its registered address it is accepted
    assoc = _associate_from(cloud, "DEMO_MOD", "127.0.0.1")
    assert assoc.is_established
    assoc.release()


def test_an_ae_may_be_registered_with_a_network(cloud: LocalCloud) -> None:
    # Given an AE registered for the network 127.0.0.0/30 (host name elsewhere)
    org = OrganisationInfo("1.2.246.10.44445555.10", "Network Clinic", ("1.2.246.21",))
    cloud.register(
        org, AEInfo("NET_MOD", org.oid, "pacs.invalid", 104, roles=("store",), addresses=("127.0.0.0/30",))
    )
    # Then it may call from 127.0.0.2 and store, but not from 127.0.0.5
    assoc = _associate_from(cloud, "NET_MOD", "127.0.0.2")
    assert assoc.is_established
    assoc.release()
    assert _associate_from(cloud, "NET_MOD", "127.0.0.5").is_rejected


def test_wrong_called_ae_is_rejected_at_association(cloud: LocalCloud) -> None:
    result = dcmtk("echoscu", "-aet", "DEMO_MOD", "-aec", "NOT_ARCHIVE", "127.0.0.1", str(cloud.dicom_port))
    assert result.returncode != 0
    assert "Called AE Title Not Recognized" in result.stderr


def test_registered_ae_can_echo(cloud: LocalCloud) -> None:
    result = dcmtk("echoscu", "-aet", "DEMO_PACS", "-aec", "ARCHIVE", "127.0.0.1", str(cloud.dicom_port))
    assert result.returncode == 0, result.stderr
