"""DICOM over TLS with organisation certificates, against the listener's TLS port in the local cloud.

DCMTK's TLS options (storescu/findscu +tls, storescp +tls as the C-MOVE destination) are the
independent peers (DCMTK 3.6.7's movescu has no TLS: pynetdicom requests the C-MOVE): a valid certificate works; an unknown CA, an expired certificate, another
organisation's certificate with this AE title and a plain connection to the TLS port are refused,
and each refusal is in the audit trail as a schema-valid message.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from archive.data.models import IanNotification, StorageCommitment
from archive.model.organisations import AEInfo, OrganisationInfo
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelMove,
)

from local.cloud import LocalCloud, free_port, wait_for_port
from local.pki import CertificateAuthority, Issued
from tests.support.audit import mentions, wait_for_record
from tests.support.cloud import DCMTK, dcmtk, wait_until
from tests.support.dicom import HETU_ISSUER, ct_dataset, study, write
from tests.support.ian import IanReceiver
from tests.support.scu import CommitmentReceiver, Modality, action_information
from tests.support.tls import CustomerCertificates, client_context, customer_certificates, server_context

ORG = OrganisationInfo("1.2.246.10.13131313.10", "TLS Hospital", (HETU_ISSUER,), HETU_ISSUER)
OTHER = OrganisationInfo("1.2.246.10.13131313.20", "Other Hospital", (HETU_ISSUER,), HETU_ISSUER)
SCU, DEST, WRONG_DEST, PLAIN_TLS_AE, REQUESTER = "TLS_PACS", "TLS_DEST", "TLS_WRONG", "TLS_ONLY", "TLS_MOD"


@dataclass
class Setup:
    cloud: LocalCloud
    certs: CustomerCertificates
    dest_port: int
    wrong_dest_port: int
    requester_port: int
    workdir: Path


@pytest.fixture(scope="module")
def tls(cloud: LocalCloud, tmp_path_factory: pytest.TempPathFactory) -> Setup:
    workdir = tmp_path_factory.mktemp("tls-dicom")
    certs = customer_certificates(cloud, workdir / "certs", ORG.oid, OTHER.oid)
    dest_port, wrong_port, requester_port = free_port(), free_port(), free_port()
    cloud.register(
        ORG,
        AEInfo(SCU, ORG.oid, "127.0.0.1", free_port(), True, ("store", "query", "retrieve", "commitment")),
        AEInfo(DEST, ORG.oid, "127.0.0.1", dest_port, True, ("move-destination",)),
        AEInfo(WRONG_DEST, ORG.oid, "127.0.0.1", wrong_port, True, ("move-destination",)),
        AEInfo(PLAIN_TLS_AE, ORG.oid, "127.0.0.1", free_port(), True, ("store",)),
        AEInfo(REQUESTER, ORG.oid, "127.0.0.1", requester_port, True, ("store", "commitment")),
    )
    cloud.register(OTHER)
    return Setup(cloud, certs, dest_port, wrong_port, requester_port, workdir)


def tls_options(issued: Issued, ca: Path) -> tuple[str, ...]:
    return ("+tls", str(issued.key_path), str(issued.cert_path), "+cf", str(ca))


def store(setup: Setup, issued: Issued | None, files: list[Path], *, aet: str = SCU, port: int | None = None):
    cloud = setup.cloud
    options = tls_options(issued, setup.certs.ca_path) if issued else ()
    return dcmtk(
        "storescu",
        "-v",
        *options,
        "-aet",
        aet,
        "-aec",
        "ARCHIVE",
        "127.0.0.1",
        str(port or cloud.dicom_tls_port),
        *map(str, files),
    )


def security_alert(port: int, reason: str):
    return lambda r, doc: r["event"] == "110113" and mentions(doc, f":{port}") and reason in r["xml"]


def test_a_valid_certificate_stores_over_tls_and_the_transfer_is_audited(tls: Setup) -> None:
    # Given an image of the TLS hospital's patient
    files = study(tls.workdir, 2, patient_id="010101A901X")
    study_uid = str(pydicom.dcmread(files[0]).StudyInstanceUID)

    # When its PACS sends it with storescu +tls and its organisation's certificate
    result = store(tls, tls.certs.valid, files)

    # Then the archive stores it, and audits 110104 (Create) for the study
    assert result.returncode == 0, result.stderr + result.stdout
    assert (
        result.stdout.count("Received Store Response (Success)")
        + result.stderr.count("Received Store Response (Success)")
        == 2
    )
    record, document = wait_for_record(
        tls.cloud, lambda r, doc: r["event"] == "110104" and r["action"] == "C" and mentions(doc, study_uid)
    )
    assert record["outcome"] == 0
    assert document.find("ActiveParticipant").get("UserID") == SCU
    sop_class = document.find(".//ParticipantObjectDescription/SOPClass")
    assert sop_class.get("UID") == CTImageStorage and sop_class.get("NumberOfInstances") == "2"


@pytest.mark.parametrize(
    ("which", "reason"),
    [("unknown_ca", "unable to get local issuer certificate"), ("expired", "certificate has expired")],
)
def test_an_untrusted_or_expired_certificate_is_refused_in_the_handshake(
    tls: Setup, which: str, reason: str
) -> None:
    # Given a certificate the archive must not accept
    issued: Issued = getattr(tls.certs, which)
    files = [write(ct_dataset(patient_id="010101A902X"), tls.workdir)]

    # When storescu presents it
    result = store(tls, issued, files)

    # Then nothing is stored and the refusal is a security alert (110113) naming why
    assert result.returncode != 0
    assert "Store Response" not in result.stdout + result.stderr
    wait_for_record(tls.cloud, security_alert(tls.cloud.dicom_tls_port, reason))


def test_another_organisations_certificate_with_this_ae_title_is_rejected(tls: Setup) -> None:
    # Given a certificate of another (registered, trusted) organisation
    files = [write(ct_dataset(patient_id="010101A903X"), tls.workdir)]

    # When it calls as the TLS hospital's AE
    result = store(tls, tls.certs.other_organisation, files)

    # Then the association is rejected (calling AE not recognised) and the failed login audited
    assert result.returncode != 0
    assert "Association Rejected" in result.stdout + result.stderr
    record, _ = wait_for_record(
        tls.cloud, lambda r, doc: r["event"] == "110114" and SCU in r["requestors"] and OTHER.oid in r["xml"]
    )
    assert record["outcome"] == 4


def test_a_plain_connection_to_the_tls_port_is_refused(tls: Setup) -> None:
    files = [write(ct_dataset(patient_id="010101A904X"), tls.workdir)]

    result = store(tls, None, files)

    assert result.returncode != 0
    assert "Association Accepted" not in result.stdout + result.stderr
    wait_for_record(tls.cloud, security_alert(tls.cloud.dicom_tls_port, "WRONG_VERSION_NUMBER"))


def test_an_ae_registered_for_tls_is_refused_on_the_plain_port(tls: Setup) -> None:
    files = [write(ct_dataset(patient_id="010101A905X"), tls.workdir)]

    result = store(tls, None, files, aet=PLAIN_TLS_AE, port=tls.cloud.dicom_port)

    assert result.returncode != 0
    assert "Association Rejected" in result.stdout + result.stderr
    wait_for_record(
        tls.cloud,
        lambda r, doc: (
            r["event"] == "110114" and PLAIN_TLS_AE in r["requestors"] and "without it" in r["xml"]
        ),
    )


@pytest.fixture
def storescp(tls: Setup) -> Iterator[tuple[Path, Path]]:
    """DCMTK storescp +tls as the move destinations: the right organisation's and a wrong one."""
    out, wrong_out = tls.workdir / "received", tls.workdir / "wrong-received"
    out.mkdir(exist_ok=True)
    wrong_out.mkdir(exist_ok=True)
    processes = [
        subprocess.Popen(
            [
                str(DCMTK / "storescp"),
                *tls_options(issued, tls.certs.ca_path),
                "-aet",
                aet,
                "-od",
                str(directory),
                str(port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for issued, aet, directory, port in (
            (tls.certs.valid, DEST, out, tls.dest_port),
            (tls.certs.other_organisation, WRONG_DEST, wrong_out, tls.wrong_dest_port),
        )
    ]
    try:
        for process, port in zip(processes, (tls.dest_port, tls.wrong_dest_port), strict=True):
            wait_for_port("127.0.0.1", port, process=process)
        yield out, wrong_out
    finally:
        for process in processes:
            process.terminate()
            process.wait(10)


def test_find_and_move_over_tls_to_a_tls_destination_and_not_to_a_wrong_one(
    tls: Setup, storescp: tuple[Path, Path]
) -> None:
    out, wrong_out = storescp
    # Given a study stored over TLS
    files = study(tls.workdir, 2, patient_id="010101A906X")
    study_uid = str(pydicom.dcmread(files[0]).StudyInstanceUID)
    assert store(tls, tls.certs.valid, files).returncode == 0
    options = tls_options(tls.certs.valid, tls.certs.ca_path)

    # When the PACS queries with findscu +tls
    found = dcmtk(
        "findscu",
        "-S",
        "-v",
        *options,
        "-aet",
        SCU,
        "-aec",
        "ARCHIVE",
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        f"StudyInstanceUID={study_uid}",
        "-k",
        "PatientID",
        "127.0.0.1",
        str(tls.cloud.dicom_tls_port),
    )
    # Then it finds the study, and the query is audited with the query itself
    assert found.returncode == 0, found.stderr
    assert "010101A906X" in found.stdout + found.stderr
    wait_for_record(tls.cloud, lambda r, doc: r["event"] == "110112" and mentions(doc, "010101A906X"))

    # When it moves the study to its TLS destination (storescp +tls, the hospital's certificate).
    # DCMTK 3.6.7's movescu has no TLS; the C-MOVE SCU is pynetdicom, the destination DCMTK.
    def move(destination: str) -> tuple[int, int]:
        ae = AE(ae_title=SCU)
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
        assoc = ae.associate(
            "127.0.0.1",
            tls.cloud.dicom_tls_port,
            ae_title="ARCHIVE",
            tls_args=(client_context(tls.certs.valid, tls.certs.ca_path), None),
        )
        assert assoc.is_established
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "STUDY"
        identifier.StudyInstanceUID = study_uid
        try:
            *_, (status, _) = assoc.send_c_move(
                identifier, destination, StudyRootQueryRetrieveInformationModelMove
            )
        finally:
            assoc.release()
        return int(status.Status), int(status.get("NumberOfCompletedSuboperations", 0))

    status, completed = move(DEST)
    # Then both instances arrive there over TLS, and the transfer is audited as Read
    assert (status, completed) == (0x0000, 2)
    assert len(list(out.iterdir())) == 2
    wait_for_record(
        tls.cloud,
        lambda r, doc: (
            r["event"] == "110104" and r["action"] == "R" and mentions(doc, study_uid) and DEST in r["xml"]
        ),
    )

    # When the destination registered as the hospital's presents another organisation's certificate
    status, completed = move(WRONG_DEST)
    # Then the archive refuses to send to it: the move fails and no instance arrives
    assert status != 0x0000 and completed == 0
    assert list(wrong_out.iterdir()) == []


def test_a_commitment_report_goes_over_tls_on_a_new_association(tls: Setup) -> None:
    # Given the modality's own SCP, listening with TLS and its organisation's certificate
    receiver = CommitmentReceiver(
        REQUESTER, tls.requester_port, ssl_context=server_context(tls.certs.valid, tls.certs.ca_path)
    )
    try:
        # And a commitment requested over TLS, on an association released at once
        dataset = ct_dataset(patient_id="010101A907X")
        modality = Modality(
            tls.cloud.dicom_tls_port,
            REQUESTER,
            tls_args=(client_context(tls.certs.valid, tls.certs.ca_path), None),
        )
        assert modality.assoc.is_established
        assert modality.store(dataset) == 0x0000
        info = action_information([(CTImageStorage, dataset.SOPInstanceUID)])
        assert modality.request_commitment(info) == 0x0000
        modality.release()

        # Then the report arrives on a new TLS association from the archive
        report = receiver.wait_report(timeout=90)
    finally:
        receiver.stop()
    assert report.event_type == 1
    assert report.info.TransactionUID == info.TransactionUID
    wait_until(lambda: StorageCommitment.get(info.TransactionUID).reported_on == "NEW_ASSOCIATION")


def test_a_new_ca_in_the_rotated_secret_is_trusted_without_a_restart(tls: Setup) -> None:
    # Given a certificate from a CA the archive does not trust yet
    assert tls.cloud.pki is not None
    new_ca = CertificateAuthority(tls.workdir / "new-ca", name="Customer CA 2")
    issued = new_ca.issue("rotated", common_name="rotated.customer.test", organisation_oid=ORG.oid)
    files = [write(ct_dataset(patient_id="010101A908X"), tls.workdir)]
    assert store(tls, issued, files).returncode != 0

    # When the operator puts a new version of the TLS secret with that CA in the bundle
    tls.cloud.rotate_tls(tls.cloud.pki.secret_value(extra_cas=(new_ca.certificate_pem,)))
    try:
        # Then the running listener accepts it within its check interval
        wait_until(lambda: store(tls, issued, files).returncode == 0, timeout=60, interval=1.0)
    finally:
        tls.cloud.rotate_tls(tls.cloud.pki.secret_value())


IAN_ORG = OrganisationInfo("1.2.246.10.13131313.30", "IAN Hospital", (HETU_ISSUER,), HETU_ISSUER)


def test_an_ian_goes_over_tls_to_a_verified_receiver_and_not_to_an_unknown_ca(tls: Setup) -> None:
    """IAN to AEs registered with tls=true: delivered to the PACS whose server certificate chains to
    the trusted CA and names its organisation; never to one whose certificate is from an unknown CA
    (the attempt fails in the handshake, is recorded and retried)."""
    cloud = tls.cloud
    certs = customer_certificates(cloud, tls.workdir / "ian-certs", IAN_ORG.oid, OTHER.oid)
    good_port, bad_port = free_port(), free_port()
    cloud.register(
        IAN_ORG,
        AEInfo("TLS_IAN_MOD", IAN_ORG.oid, "127.0.0.1", free_port(), True, ("store", "commitment")),
        AEInfo("TLS_IAN_PACS", IAN_ORG.oid, "127.0.0.1", good_port, True, ("ian",)),
        AEInfo("TLS_IAN_ROGUE", IAN_ORG.oid, "127.0.0.1", bad_port, True, ("ian",)),
    )
    cloud.configure_registration(IAN_ORG.oid, stability_seconds=1.0)
    good = IanReceiver("TLS_IAN_PACS", good_port, ssl_context=server_context(certs.valid, certs.ca_path))
    rogue = IanReceiver(
        "TLS_IAN_ROGUE", bad_port, ssl_context=server_context(certs.unknown_ca, certs.ca_path)
    )
    try:
        # When the organisation's modality stores a study over TLS and has it committed
        dataset = ct_dataset(patient_id="010101A907X")
        modality = Modality(
            cloud.dicom_tls_port, "TLS_IAN_MOD", tls_args=(client_context(certs.valid, certs.ca_path), None)
        )
        try:
            assert modality.store(dataset) == 0x0000
            info = action_information([(CTImageStorage, dataset.SOPInstanceUID)])
            assert modality.request_commitment(info) == 0x0000
            assert modality.wait_report(timeout=90).event_type == 1
        finally:
            modality.release()
        study_uid = str(dataset.StudyInstanceUID)

        # Then the IAN arrives over TLS at the PACS with the demo-CA certificate
        notice = good.wait_for(study_uid, timeout=120)
        assert notice.calling_ae == cloud.settings.archive_ae_title  # type: ignore[union-attr]
        # And the PACS with a certificate from an unknown CA gets nothing: the attempt is recorded
        # as failed and stays to be retried (or is given up), never delivered
        failed = wait_until(
            lambda: next(
                (
                    n
                    for n in IanNotification.query(study_uid, consistent_read=True)
                    if n.destination_ae == "TLS_IAN_ROGUE" and (n.attempts or 0) >= 1
                ),
                None,
            ),
            timeout=120,
            interval=0.3,
        )
        assert failed.state in ("PENDING", "FAILED") and failed.last_error
        assert rogue.all == []
    finally:
        good.stop()
        rogue.stop()
