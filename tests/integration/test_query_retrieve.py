"""Query/Retrieve over real sockets: DCMTK findscu/movescu/getscu and pynetdicom peers against the
archive's listener in the local cloud. Each test uses its own organisation, AEs and patients."""

from __future__ import annotations

import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
from archive.data.models import AccessRecord, Patient, Study
from archive.model.organisations import AEInfo, OrganisationInfo
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, JPEGBaseline8Bit
from pynetdicom import AE, AllStoragePresentationContexts, build_role, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    MRImageStorage,
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from local.cloud import LocalCloud, free_port
from tests.support.cloud import dcmtk, getscu, movescu, s3, storescu, wait_until
from tests.support.dicom import HETU_ISSUER, bundled_storage_files, new_uid, study, write

ORG_ISSUER = "1.2.246.10.87654321.22.2026"


@dataclass
class Customer:
    """An organisation with a query/retrieve AE and a move destination."""

    org: OrganisationInfo
    scu: str
    dest: str
    dest_port: int
    other_dest: str = ""


_counter = iter(range(1, 10_000))


def customer(cloud: LocalCloud, roles: tuple[str, ...] = ("store", "query", "retrieve")) -> Customer:
    n = next(_counter)
    org = OrganisationInfo(
        oid=f"1.2.246.10.87654321.{n}",
        name=f"QR test hospital {n}",
        trusted_issuers=(HETU_ISSUER, ORG_ISSUER),
        default_issuer=ORG_ISSUER,
    )
    port = free_port()
    c = Customer(org, f"QR_SCU_{n}", f"QR_DEST_{n}", port)
    cloud.register(
        org,
        AEInfo(c.scu, org.oid, "127.0.0.1", free_port(), roles=roles),
        AEInfo(c.dest, org.oid, "127.0.0.1", port, roles=("move-destination",)),
    )
    return c


def sub(workdir: Path, name: str) -> Path:
    path = workdir / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def hetu() -> str:
    """A fresh test personal identity code ('9' as 8th character marks test hetus)."""
    n = next(_counter) + 500
    return f"0101{n % 100:02d}A9{n:02d}X"[:11]


def store_study(cloud: LocalCloud, c: Customer, files: list[Path], extra: tuple[str, ...] = ()) -> str:
    result = storescu(cloud, files, aet=c.scu, extra=extra)
    assert result.returncode == 0, result.stderr
    study_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    wait_until(lambda: (s := Study.get(study_uid)) and s.number_of_instances == len(files), timeout=90)
    return study_uid


def findscu(
    cloud: LocalCloud, aet: str, outdir: Path, *keys: str, root: str = "-S"
) -> tuple[Any, list[Dataset]]:
    outdir.mkdir(parents=True, exist_ok=True)
    args = [root, "-v", "-aet", aet, "-aec", "ARCHIVE", "-X", "-od", str(outdir)]
    for key in keys:
        args += ["-k", key]
    result = dcmtk("findscu", *args, "127.0.0.1", str(cloud.dicom_port))
    responses = [pydicom.dcmread(p) for p in sorted(outdir.glob("rsp*.dcm"))]
    return result, responses


@dataclass
class Receiver:
    """A pynetdicom Storage SCP on loopback that keeps what it receives."""

    port: int
    ae_title: str
    transfer_syntaxes: list[str] | None = None
    datasets: list[Dataset] = field(default_factory=list)
    syntaxes: list[str] = field(default_factory=list)
    server: Any = None

    def __enter__(self) -> Receiver:
        ae = AE(ae_title=self.ae_title)
        for cx in AllStoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax, self.transfer_syntaxes or None)  # type: ignore[arg-type]

        def on_store(event: Any) -> int:
            ds = event.dataset
            ds.file_meta = event.file_meta
            self.datasets.append(ds)
            self.syntaxes.append(str(event.context.transfer_syntax))
            return 0x0000

        self.server = ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)]
        )
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()


def records(patient_key: str, operation: str) -> list[AccessRecord]:
    return [r for r in AccessRecord.query(patient_key) if r.operation == operation]


# --- C-FIND --------------------------------------------------------------------------------------


def test_find_study_root_matches_and_returns_aggregates(cloud: LocalCloud, workdir: Path) -> None:
    # Given a customer's two studies of one patient on different dates
    c = customer(cloud)
    pid = hetu()
    first = store_study(
        cloud,
        c,
        study(
            sub(workdir, "a"),
            3,
            patient_id=pid,
            study_date="20250101",
            patient_name="Virtanen^Ville",
            accession="A-1",
        ),
    )
    store_study(
        cloud,
        c,
        study(
            sub(workdir, "b"),
            2,
            patient_id=pid,
            study_date="20260301",
            patient_name="Virtanen^Ville",
            accession="A-2",
        ),
    )
    # When findscu asks by Patient ID, a date range, a lower-case name wildcard and return keys
    result, found = findscu(
        cloud,
        c.scu,
        workdir / "find",
        "QueryRetrieveLevel=STUDY",
        f"PatientID={pid}",
        "StudyDate=20241201-20250630",
        "PatientName=virt*",
        "StudyInstanceUID",
        "NumberOfStudyRelatedInstances",
        "NumberOfStudyRelatedSeries",
        "ModalitiesInStudy",
        "AccessionNumber",
        "IssuerOfPatientID",
    )
    # Then exactly the first study matches, with its aggregates
    assert result.returncode == 0, result.stderr
    assert [str(d.StudyInstanceUID) for d in found] == [first]
    answer = found[0]
    assert int(answer.NumberOfStudyRelatedInstances) == 3
    assert int(answer.NumberOfStudyRelatedSeries) == 1
    assert answer.ModalitiesInStudy == "CT"
    assert answer.AccessionNumber == "A-1"
    assert answer.IssuerOfPatientID == HETU_ISSUER
    # And the query is in the access record of that patient (written while the final response
    # goes out, so it may land a moment after findscu has its answer)
    key = f"{pid}^^^{HETU_ISSUER}"
    wait_until(
        lambda: any(
            r.study_uid == first and r.calling_ae == c.scu and r.org_oid == c.org.oid
            for r in records(key, "C-FIND")
        ),
        timeout=30,
    )


def test_find_series_image_and_patient_levels(cloud: LocalCloud, workdir: Path) -> None:
    # Given one study of three instances
    c = customer(cloud)
    pid = hetu()
    files = study(sub(workdir, "s"), 3, patient_id=pid)
    study_uid = store_study(cloud, c, files)
    series_uid = str(pydicom.dcmread(files[0]).SeriesInstanceUID)
    sops = sorted(str(pydicom.dcmread(f).SOPInstanceUID) for f in files)
    # When asking for its series, then its images (UID list of two), then the patient (Patient Root)
    _, series = findscu(
        cloud,
        c.scu,
        workdir / "series",
        "QueryRetrieveLevel=SERIES",
        f"StudyInstanceUID={study_uid}",
        "SeriesInstanceUID",
        "Modality",
        "NumberOfSeriesRelatedInstances",
    )
    _, images = findscu(
        cloud,
        c.scu,
        workdir / "images",
        "QueryRetrieveLevel=IMAGE",
        f"StudyInstanceUID={study_uid}",
        f"SeriesInstanceUID={series_uid}",
        f"SOPInstanceUID={sops[0]}\\{sops[1]}",
        "InstanceNumber",
    )
    _, patients = findscu(
        cloud,
        c.scu,
        workdir / "patients",
        "QueryRetrieveLevel=PATIENT",
        f"PatientID={pid}",
        "PatientName",
        "NumberOfPatientRelatedStudies",
        "NumberOfPatientRelatedInstances",
        root="-P",
    )
    # Then each level answers from the index
    assert [
        (str(d.SeriesInstanceUID), d.Modality, int(d.NumberOfSeriesRelatedInstances)) for d in series
    ] == [(series_uid, "CT", 3)]
    assert sorted(str(d.SOPInstanceUID) for d in images) == sops[:2]
    assert len(patients) == 1
    assert str(patients[0].PatientName) == "Testinen^Matti"
    assert int(patients[0].NumberOfPatientRelatedStudies) == 1
    assert int(patients[0].NumberOfPatientRelatedInstances) == 3


def test_country_wide_query_is_refused_with_comment(cloud: LocalCloud, workdir: Path) -> None:
    # Given a customer allowed to query
    c = customer(cloud)
    # When it asks (findscu, then pynetdicom) for every study of every patient named "A*"
    result, found = findscu(
        cloud, c.scu, workdir / "cw", "QueryRetrieveLevel=STUDY", "PatientName=A*", "StudyInstanceUID"
    )
    ae = _scu(c.scu)
    assoc = ae.associate("127.0.0.1", cloud.dicom_port, ae_title="ARCHIVE")
    query = Dataset()
    query.QueryRetrieveLevel = "PATIENT"
    query.PatientName = "A*"
    responses = list(assoc.send_c_find(query, PatientRootQueryRetrieveInformationModelFind))
    assoc.release()
    # Then the archive answers a failure status with an Error Comment and no matches
    assert found == []
    assert "DataSetDoesNotMatchSOPClass" in result.stderr, result.stderr
    assert len(responses) == 1
    status, identifier = responses[0]
    assert status.Status == 0xA900 and identifier is None
    assert "PatientID" in status.ErrorComment


def test_other_organisation_and_unauthorised_ae_see_nothing(cloud: LocalCloud, workdir: Path) -> None:
    # Given a study of customer A, customer B (query role) and an AE of A without the query role
    a = customer(cloud)
    b = customer(cloud)
    mute = customer(cloud, roles=("store",))
    pid = hetu()
    study_uid = store_study(cloud, a, study(sub(workdir, "a"), 1, patient_id=pid))
    # When B asks by the study's UID, and the mute AE asks too
    _, seen_by_b = findscu(
        cloud, b.scu, workdir / "b", "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={study_uid}"
    )
    refused, seen_by_mute = findscu(
        cloud, mute.scu, workdir / "m", "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={study_uid}"
    )
    _, seen_by_a = findscu(
        cloud, a.scu, workdir / "a2", "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={study_uid}"
    )
    # Then only A sees it; the mute AE is refused as not authorised
    assert seen_by_b == [] and seen_by_mute == []
    assert "0x124" in refused.stderr.lower(), refused.stderr
    assert [str(d.StudyInstanceUID) for d in seen_by_a] == [study_uid]


# --- C-MOVE --------------------------------------------------------------------------------------


def test_move_sends_study_with_current_patient_identity(cloud: LocalCloud, workdir: Path) -> None:
    # Given a stored study, and then the patient renamed in the index (as an HL7 update does)
    c = customer(cloud)
    pid = hetu()
    files = study(sub(workdir, "m"), 4, patient_id=pid, patient_name="Vanha^Nimi")
    study_uid = store_study(cloud, c, files)
    key = f"{pid}^^^{HETU_ISSUER}"
    Patient(key).update(actions=[Patient.patient_name.set("Uusi^Nimi"), Patient.sex.set("F")])
    stored_before = {
        o["Key"]: o["ETag"]
        for o in s3(cloud).list_objects_v2(Bucket=cloud.settings.bucket).get("Contents", [])
    }  # type: ignore[union-attr]
    # When movescu asks to move the study to the customer's destination
    with Receiver(c.dest_port, c.dest) as receiver:
        result = movescu(cloud, c.scu, c.dest, study_uid)
    # Then every instance arrived, with identical pixel data and the current name and sex
    assert result.returncode == 0, result.stderr
    assert len(receiver.datasets) == 4
    sent = {str(pydicom.dcmread(f).SOPInstanceUID): pydicom.dcmread(f) for f in files}
    for ds in receiver.datasets:
        assert ds.PixelData == sent[str(ds.SOPInstanceUID)].PixelData
        assert str(ds.PatientName) == "Uusi^Nimi" and ds.PatientSex == "F"
        assert ds.PatientID == pid and ds.IssuerOfPatientID == HETU_ISSUER
    # And the stored objects did not change
    stored_after = {
        o["Key"]: o["ETag"]
        for o in s3(cloud).list_objects_v2(Bucket=cloud.settings.bucket).get("Contents", [])
    }  # type: ignore[union-attr]
    assert all(stored_after[k] == v for k, v in stored_before.items())
    # And the move is recorded with destination and instances
    moves = records(key, "C-MOVE")
    assert moves and moves[-1].destination_ae == c.dest
    assert sorted(moves[-1].instances or []) == sorted(sent)


def test_move_follows_patient_merge(cloud: LocalCloud, workdir: Path) -> None:
    # Given a study stored under a temporary ID that is later merged into a hetu (HL7 A40)
    c = customer(cloud)
    temp_id, pid = f"T{next(_counter):06d}", hetu()
    files = study(sub(workdir, "t"), 1, patient_id=temp_id, issuer=None)
    study_uid = store_study(cloud, c, files)
    survivor = f"{pid}^^^{HETU_ISSUER}"
    Patient(survivor, patient_id=pid, issuer=HETU_ISSUER, patient_name="Oikea^Nimi").save()
    Patient(f"{temp_id}^^^{ORG_ISSUER}").update(actions=[Patient.merged_into.set(survivor)])
    # When the study is found by the surviving ID and moved
    _, found = findscu(
        cloud,
        c.scu,
        workdir / "f",
        "QueryRetrieveLevel=STUDY",
        f"PatientID={pid}",
        "StudyInstanceUID",
        "PatientName",
    )
    with Receiver(c.dest_port, c.dest) as receiver:
        movescu(cloud, c.scu, c.dest, study_uid)
    # Then both carry the surviving identity
    assert [str(d.StudyInstanceUID) for d in found] == [study_uid]
    assert str(found[0].PatientName) == "Oikea^Nimi"
    assert [(d.PatientID, d.IssuerOfPatientID, str(d.PatientName)) for d in receiver.datasets] == [
        (pid, HETU_ISSUER, "Oikea^Nimi")
    ]


def test_move_to_unknown_or_foreign_destination_is_refused(cloud: LocalCloud, workdir: Path) -> None:
    # Given a study of customer A and a destination registered for customer B
    a, b = customer(cloud), customer(cloud)
    study_uid = store_study(cloud, a, study(sub(workdir, "u"), 1, patient_id=hetu()))
    statuses = []
    for destination in ("NO_SUCH_AE", b.dest):
        # When A asks to move it there
        result = movescu(cloud, a.scu, destination, study_uid)
        statuses.append(result.stderr.lower())
    # Then both are refused with A801 Move Destination unknown
    assert all("movedestinationunknown" in s for s in statuses), statuses


def _jpeg_study(directory: Path, patient_id: str) -> list[Path]:
    """pydicom's bundled JPEG files, re-identified as one new study of one patient."""
    directory.mkdir(parents=True, exist_ok=True)
    study_uid = new_uid()
    chosen = [f for f in bundled_storage_files() if f.transfer_syntax_uid == JPEGBaseline8Bit][:4]
    assert chosen, "pydicom ships JPEG test files"
    out = []
    for f in chosen:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(f.path)
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = new_uid()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = new_uid()
        ds.PatientID = patient_id
        ds.IssuerOfPatientID = HETU_ISSUER
        out.append(write(ds, directory))
    return out


def test_jpeg_study_to_explicit_little_endian_only_receiver(cloud: LocalCloud, workdir: Path) -> None:
    # Given a JPEG-compressed study
    c = customer(cloud)
    files = _jpeg_study(sub(workdir, "jpeg"), hetu())
    study_uid = store_study(cloud, c, files, extra=("-xy",))  # stored as JPEG Baseline
    # When it is moved to a receiver that accepts Explicit VR Little Endian only
    with Receiver(c.dest_port, c.dest, [ExplicitVRLittleEndian]) as receiver:
        result = movescu(cloud, c.scu, c.dest, study_uid)
    # Then every instance arrived decompressed, with the pixels the JPEG decodes to
    assert result.returncode == 0, result.stderr
    assert receiver.syntaxes == [ExplicitVRLittleEndian] * len(files)
    originals = {str(pydicom.dcmread(f).SOPInstanceUID): pydicom.dcmread(f) for f in files}
    for ds in receiver.datasets:
        original = originals[str(ds.SOPInstanceUID)]
        assert (ds.pixel_array == original.pixel_array).all()


# --- C-GET and C-CANCEL (pynetdicom SCU) ---------------------------------------------------------


def test_getscu_receives_study_on_same_association(cloud: LocalCloud, workdir: Path) -> None:
    # Given a stored study
    c = customer(cloud)
    files = study(sub(workdir, "g"), 3, patient_id=hetu())
    study_uid = store_study(cloud, c, files)
    out = workdir / "got"
    out.mkdir()
    # When getscu retrieves it
    result = getscu(cloud, c.scu, study_uid, out)
    # Then the files arrived with the pixel data as stored
    assert result.returncode == 0, result.stderr
    got = {str(d.SOPInstanceUID): d for d in (pydicom.dcmread(p) for p in out.iterdir())}
    for path in files:
        original = pydicom.dcmread(path)
        assert got[str(original.SOPInstanceUID)].PixelData == original.PixelData


def _scu(aet: str, *, get: bool = False) -> AE:
    ae = AE(ae_title=aet)
    ae.dimse_timeout = 60
    if get:
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
        ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    else:
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
        ae.add_requested_context(PatientRootQueryRetrieveInformationModelFind)
    return ae


def test_pynetdicom_get_with_role_selection(cloud: LocalCloud, workdir: Path) -> None:
    # Given a stored study and a pynetdicom SCU proposing the SCP role for CT Image Storage
    c = customer(cloud)
    study_uid = store_study(cloud, c, study(sub(workdir, "r"), 2, patient_id=hetu()))
    received: list[str] = []

    def on_store(event: Any) -> int:
        received.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    ae = _scu(c.scu, get=True)
    assoc = ae.associate(
        "127.0.0.1",
        cloud.dicom_port,
        ae_title="ARCHIVE",
        ext_neg=[build_role(CTImageStorage, scp_role=True)],
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study_uid
    # When it sends C-GET
    responses = list(assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet))
    assoc.release()
    # Then both instances came on the same association and the final status is success with counts
    final = responses[-1][0]
    assert final.Status == 0x0000 and final.NumberOfCompletedSuboperations == 2
    assert len(received) == 2


def test_cancel_stops_move_with_counts(cloud: LocalCloud, workdir: Path) -> None:
    # Given a study of 20 instances and a slow-ish receiver that cancels after the first arrives
    c = customer(cloud)
    study_uid = store_study(cloud, c, study(sub(workdir, "c"), 20, patient_id=hetu()))
    ae = _scu(c.scu)
    assoc = ae.associate("127.0.0.1", cloud.dicom_port, ae_title="ARCHIVE")
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study_uid
    cancelled = threading.Event()

    def on_store(event: Any) -> int:
        if not cancelled.is_set():
            # Cancel while the archive waits for this sub-operation's response; give the C-CANCEL a
            # head start on the other association before answering (pacing, not an assertion).
            assoc.send_c_cancel(7, query_model=StudyRootQueryRetrieveInformationModelMove)
            cancelled.set()
            time.sleep(0.5)
        return 0x0000

    with Receiver(c.dest_port, c.dest) as receiver:
        receiver.server.bind(evt.EVT_C_STORE, on_store)
        statuses = [
            status
            for status, _ in assoc.send_c_move(
                query, c.dest, StudyRootQueryRetrieveInformationModelMove, msg_id=7
            )
        ]
        assoc.release()
    # Then the archive stopped with Cancel and the remaining sub-operations counted
    final = statuses[-1]
    assert final.Status == 0xFE00, final
    assert final.NumberOfRemainingSuboperations > 0
    assert final.NumberOfCompletedSuboperations < 20


def test_get_partial_failure_when_receiver_takes_no_usable_syntax(cloud: LocalCloud, workdir: Path) -> None:
    # Given a study of a CT and an MR image, and a C-GET requester that takes CT only
    c = customer(cloud)
    files = study(sub(workdir, "p"), 2, patient_id=hetu())
    mr = pydicom.dcmread(files[1])
    mr.SOPClassUID = mr.file_meta.MediaStorageSOPClassUID = MRImageStorage
    mr.save_as(files[1], enforce_file_format=True)
    study_uid = store_study(cloud, c, files)
    ae = _scu(c.scu, get=True)
    ae.add_requested_context(MRImageStorage, [JPEG2000Lossless])  # MR only in a syntax we cannot make
    assoc = ae.associate(
        "127.0.0.1",
        cloud.dicom_port,
        ae_title="ARCHIVE",
        ext_neg=[build_role(CTImageStorage, scp_role=True), build_role(MRImageStorage, scp_role=True)],
        evt_handlers=[(evt.EVT_C_STORE, lambda event: 0x0000)],
    )
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study_uid
    # When it sends C-GET for the study
    responses = list(assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet))
    assoc.release()
    # Then the CT was sent, the MR sub-operation failed, and the final status says so
    final, identifier = responses[-1]
    assert final.Status == 0xB000
    assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (1, 1)
    assert identifier.FailedSOPInstanceUIDList == mr.SOPInstanceUID


def test_retrieve_without_retrieve_role_is_refused(cloud: LocalCloud, workdir: Path) -> None:
    # Given a study and an AE of the same organisation that may only query
    c = customer(cloud)
    study_uid = store_study(cloud, c, study(sub(workdir, "q"), 1, patient_id=hetu()))
    querier = f"{c.scu[:12]}_Q"
    cloud.register(c.org, AEInfo(querier, c.org.oid, "127.0.0.1", free_port(), roles=("query",)))
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study_uid
    # When it tries C-GET and C-MOVE
    ae = _scu(querier, get=True)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate(
        "127.0.0.1", cloud.dicom_port, ae_title="ARCHIVE", ext_neg=[build_role(CTImageStorage, scp_role=True)]
    )
    get = list(assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet))
    move = list(assoc.send_c_move(query, c.dest, StudyRootQueryRetrieveInformationModelMove))
    assoc.release()
    # Then both are refused and nothing was sent
    assert get[-1][0].Status == 0x0124 and "retrieve" in get[-1][0].ErrorComment
    assert get[-1][0].get("NumberOfCompletedSuboperations", 0) == 0
    assert move[-1][0].Status == 0xC514
