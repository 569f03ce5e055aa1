"""The disclosure log end to end: customers' notifications over mutual TLS (the local API Gateway
stand-in), the hash chain verified by the admin CLI after an edit or a delete, the anchors, and the
per-patient report from the CLI and the admin API (JSON and CSV)."""

from __future__ import annotations

import csv
import http.client
import io
import json
import ssl
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pydicom
import pytest
from archive.data.facilities import FacilityRepository
from archive.data.models import DisclosureEntry, Patient, Study
from archive.data.registry import Registry
from archive.errors import NotAuthenticated
from archive.model.identity import PatientIdentity
from archive.model.organisations import AEInfo, OrganisationInfo
from archive.services.connection_security import PeerAuthenticator
from archive.services.directory import CachedRegistry
from archive.xds.xua import read_assertion

from local.cloud import ROOT, LocalCloud, free_port
from local.resources import client
from tests.support.audit import wait_for_record
from tests.support.cloud import storescu, wait_until
from tests.support.dicom import HETU_ISSUER, study
from tests.support.tls import CustomerCertificates, client_context, customer_certificates
from tests.support.xua import make_assertion, make_identity_provider

ORG = OrganisationInfo("1.2.246.10.13131313.40", "Notifying Hospital", (HETU_ISSUER,), HETU_ISSUER)
OTHER = OrganisationInfo("1.2.246.10.13131313.50", "Neighbour Hospital", (HETU_ISSUER,), HETU_ISSUER)
_patients = iter(range(100, 1000))


@dataclass
class Setup:
    cloud: LocalCloud
    certs: CustomerCertificates
    workdir: Path
    # Patients of the notifying hospital, each with one stored and indexed study, handed out one
    # per test (stored in one association up front: one storescu run instead of one per test).
    patients: list[tuple[str, str]]


def store_studies(cloud: LocalCloud, workdir: Path, patient_ids: list[str], aet: str) -> list[str]:
    """A one-image study per patient in one storescu association, waited for until indexed."""
    files = []
    for patient_id in patient_ids:
        directory = workdir / f"{aet}-{patient_id}"
        directory.mkdir(exist_ok=True)
        files += study(directory, 1, patient_id=patient_id)
    assert storescu(cloud, files, aet=aet).returncode == 0
    study_uids = [str(pydicom.dcmread(f).StudyInstanceUID) for f in files]
    for patient_id, study_uid in zip(patient_ids, study_uids, strict=True):
        key = PatientIdentity(patient_id, HETU_ISSUER).key
        wait_until(lambda u=study_uid, k=key: Study.count(u) and Patient.count(k), timeout=60)
    return study_uids


@pytest.fixture(scope="module")
def setup(cloud: LocalCloud, tmp_path_factory: pytest.TempPathFactory) -> Setup:
    workdir = tmp_path_factory.mktemp("disclosures")
    cloud.register(ORG, AEInfo("NOTIFY_PACS", ORG.oid, "127.0.0.1", free_port(), roles=("store",)))
    cloud.register(OTHER, AEInfo("NEIGHBOUR", OTHER.oid, "127.0.0.1", free_port(), roles=("store",)))
    patient_ids = [hetu() for _ in range(6)]
    studies = store_studies(cloud, workdir, patient_ids, "NOTIFY_PACS")
    certs = customer_certificates(cloud, workdir / "certs", ORG.oid, OTHER.oid)
    return Setup(cloud, certs, workdir, list(zip(patient_ids, studies, strict=True)))


def stored_study(setup: Setup) -> tuple[str, str]:
    """A patient of the notifying hospital with a stored, indexed study: (patient id, Study UID)."""
    return setup.patients.pop()


def hetu() -> str:
    n = next(_patients)
    return f"0202{n % 100:02d}A9{n:02d}X"[:11]


def notification(patient_id: str, studies: list[str], **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "notification_id": f"RIS-{patient_id}-1",
        "patient": {"id": patient_id, "issuer": HETU_ISSUER},
        "studies": studies,
        "recipient": {
            "organisation_oid": "1.2.246.10.99999999.10",
            "organisation_name": "Private clinic",
            "person": "Dr. Lääkäri",
        },
        "purpose_of_use": "TREATMENT",
        "channel": "CD",
        "disclosed_at": (datetime.now(UTC) - timedelta(hours=1))
        .isoformat(timespec="seconds")
        .replace("+00:00", "Z"),
    }
    body.update(changes)
    return body


def post(
    setup: Setup, body: dict[str, Any], context: ssl.SSLContext | None = None
) -> tuple[int, dict[str, Any]]:
    """POST /disclosures/notifications on the mutual-TLS endpoint (the customers' API)."""
    assert setup.cloud.https_port
    connection = http.client.HTTPSConnection(
        "127.0.0.1",
        setup.cloud.https_port,
        context=context or client_context(setup.certs.valid, setup.certs.ca_path),
        timeout=60,
    )
    try:
        connection.request(
            "POST", "/disclosures/notifications", json.dumps(body), {"Content-Type": "application/json"}
        )
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        connection.close()


def admin_get(setup: Setup, path: str) -> tuple[int, str, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", setup.cloud.http_port, timeout=60)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type") or "", response.read()
    finally:
        connection.close()


def admin_cli(setup: Setup, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "admin", "--endpoint", setup.cloud.endpoint, "disclosures", *args],
        cwd=ROOT,
        env=setup.cloud.env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_notification_joins_the_patients_log_once_and_is_audited(setup: Setup) -> None:
    # Given a study the notifying hospital stored for its patient
    patient_id, study_uid = stored_study(setup)
    body = notification(patient_id, [study_uid])

    # When its system notifies the archive that it handed the images out on a CD
    status, answer = post(setup, body)

    # Then the notification is entry 1 of the patient's chain
    assert status == 201, answer
    assert (answer["seq"], answer["patient"]) == (1, f"{patient_id}^^^{HETU_ISSUER}")
    # And sending it again records nothing new; the same id with other content is a conflict
    assert post(setup, body) == (200, {**answer, "status": "recorded before"})
    status, conflict = post(setup, {**body, "channel": "PRINT"})
    assert (status, conflict["error"]) == (409, "NotificationConflict")
    # And the notification is in the audit trail
    wait_for_record(
        setup.cloud, lambda r, doc: "DISCLOSURE-NOTIFICATION" in r["event_types"] and study_uid in r["xml"]
    )


@pytest.fixture(scope="module")
def known(setup: Setup) -> tuple[str, str]:
    """A patient with one stored study of the notifying hospital."""
    return stored_study(setup)


@pytest.mark.parametrize(
    ("change", "status", "error"),
    [
        ({"disclosed_at": "2026-01-15T10:15:00+02:00"}, 400, "InvalidNotification"),
        ({"disclosed_at": "2026-01-15T10:15:00"}, 400, "InvalidNotification"),
        ({"purpose_of_use": ""}, 400, "InvalidNotification"),
        ({"patient": {"id": "999999A999X", "issuer": HETU_ISSUER}}, 404, "UnknownPatient"),
        ({"studies": ["1.2.3.4.5.6.7.8.9"]}, 404, "UnknownStudy"),
    ],
)
def test_refused_notifications_say_why(
    setup: Setup, known: tuple[str, str], change: dict[str, Any], status: int, error: str
) -> None:
    patient_id, study_uid = known

    got, answer = post(setup, {**notification(patient_id, [study_uid]), **change})

    assert (got, answer["error"]) == (status, error), answer
    assert answer["message"]


def test_another_organisations_study_or_certificate_is_refused(setup: Setup) -> None:
    # Given the same patient with a study at the neighbour hospital
    patient_id, own = stored_study(setup)
    (neighbours,) = store_studies(setup.cloud, setup.workdir, [patient_id], "NEIGHBOUR")

    # When the notifying hospital reports the neighbour's study, it is not its to report
    status, answer = post(setup, notification(patient_id, [own, neighbours]))
    assert (status, answer["error"]) == (403, "StudyNotControlled")
    # When the neighbour's certificate claims to be the notifying hospital, it is refused
    other = client_context(setup.certs.other_organisation, setup.certs.ca_path)
    status, answer = post(setup, {**notification(patient_id, [own]), "organisation_oid": ORG.oid}, other)
    assert (status, answer["error"]) == (403, "NotAuthenticated")
    # When a client has no certificate at all, there is no TLS connection
    bare = ssl.create_default_context(cafile=str(setup.certs.ca_path))
    bare.check_hostname = False
    with pytest.raises((ssl.SSLError, ConnectionError)):
        post(setup, notification(patient_id, [own]), bare)
    # And nothing was recorded for the patient
    assert list(DisclosureEntry.query(f"{patient_id}^^^{HETU_ISSUER}")) == []


def _chain(setup: Setup, entries: int) -> tuple[str, str]:
    """A patient with ``entries`` notifications; (patient id, patient key)."""
    patient_id, study_uid = stored_study(setup)
    for n in range(entries):
        status, _ = post(setup, notification(patient_id, [study_uid], notification_id=f"N-{patient_id}-{n}"))
        assert status == 201
    return patient_id, f"{patient_id}^^^{HETU_ISSUER}"


def _verify(setup: Setup, patient_id: str) -> tuple[int, dict[str, Any]]:
    result = admin_cli(setup, "verify", patient_id, "--issuer", HETU_ISSUER)
    assert result.stdout, result.stderr
    return result.returncode, json.loads(result.stdout.splitlines()[0])


def test_verify_proves_a_chain_intact_and_finds_an_edited_entry(setup: Setup) -> None:
    # Given a chain of three notifications
    patient_id, key = _chain(setup, 3)
    path = f"/admin/disclosures/verify?patient_id={patient_id}&issuer={HETU_ISSUER}"
    status, _, body = admin_get(setup, path)
    assert status == 200
    chain = json.loads(body)["chains"][0]
    assert (chain["intact"], chain["entries"], chain["last_seq"]) == (True, 3, 3)

    # When someone with table access changes the recipient of entry 2
    dynamodb = client("dynamodb", setup.cloud.endpoint)
    table = DisclosureEntry.Meta.table_name
    item = dynamodb.get_item(TableName=table, Key={"patient_key": {"S": key}, "seq": {"N": "2"}})["Item"]
    content = json.loads(item["content"]["S"])
    content["recipient_org_name"] = "Someone else"
    dynamodb.put_item(TableName=table, Item={**item, "content": {"S": json.dumps(content)}})

    # Then verify fails and names entry 2
    code, verdict = _verify(setup, patient_id)
    assert (code, verdict["intact"], verdict["first_broken_link"]) == (2, False, 2)
    assert "changed" in verdict["reason"]
    # And so does the admin API
    status, _, body = admin_get(
        setup, f"/admin/disclosures/verify?patient_id={patient_id}&issuer={HETU_ISSUER}"
    )
    assert status == 409
    assert json.loads(body)["chains"][0]["first_broken_link"] == 2


def test_verify_finds_a_deleted_entry_and_a_deleted_anchored_tail(setup: Setup) -> None:
    # Given a chain of four, anchored in the Object-Locked bucket by the scheduled Lambda
    patient_id, key = _chain(setup, 4)
    (anchor,) = [s for s in setup.cloud.schedulers if s.function.name == "disclosure_anchor"]
    assert anchor.invoke()["anchors_written"] >= 1
    dynamodb = client("dynamodb", setup.cloud.endpoint)
    table = DisclosureEntry.Meta.table_name

    # When the last entry is deleted, the chain alone still looks whole, but the anchor remembers it
    dynamodb.delete_item(TableName=table, Key={"patient_key": {"S": key}, "seq": {"N": "4"}})
    code, verdict = _verify(setup, patient_id)
    assert (code, verdict["first_broken_link"], verdict["anchored_up_to_seq"]) == (2, 4, 4)
    assert "deleted" in verdict["reason"]

    # When entry 2 is deleted too, the first broken link is 2
    dynamodb.delete_item(TableName=table, Key={"patient_key": {"S": key}, "seq": {"N": "2"}})
    code, verdict = _verify(setup, patient_id)
    assert (code, verdict["first_broken_link"]) == (2, 2)
    assert "missing" in verdict["reason"]


def test_the_report_lists_every_disclosure_as_json_and_csv(setup: Setup) -> None:
    # Given two notifications for one patient
    patient_id, key = _chain(setup, 2)

    # When the supervisor asks the admin API (JSON) and the CLI (CSV)
    status, content_type, body = admin_get(
        setup, f"/admin/disclosures?patient_id={patient_id}&issuer={HETU_ISSUER}"
    )
    result = admin_cli(setup, "report", patient_id, "--issuer", HETU_ISSUER, "--format", "csv")
    status_csv, type_csv, body_csv = admin_get(
        setup, f"/admin/disclosures?patient_id={patient_id}&issuer={HETU_ISSUER}&format=csv"
    )

    # Then both show what, to whom, why, when (UTC) and how, oldest first
    assert (status, content_type) == (200, "application/json")
    rows = json.loads(body)["disclosures"]
    assert [r["seq"] for r in rows] == [1, 2]
    first = rows[0]
    assert first["recipient_org_name"] == "Private clinic" and first["recipient_person"] == "Dr. Lääkäri"
    assert (first["purpose_of_use"], first["channel"], first["kind"]) == ("TREATMENT", "CD", "NOTIFICATION")
    assert first["disclosed_at"].endswith("Z") and first["controller_oid"] == ORG.oid
    assert result.returncode == 0, result.stderr
    cli_rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["seq"] for r in cli_rows] == ["1", "2"] and cli_rows[0]["patient"] == key
    assert (status_csv, type_csv.split(";")[0]) == (200, "text/csv")
    assert list(csv.DictReader(io.StringIO(body_csv.decode("utf-8")))) == cli_rows


def test_an_xds_requests_client_certificate_must_belong_to_the_xua_organisation(setup: Setup) -> None:
    # Given a signed XUA assertion naming the notifying hospital, read by the XDS codec
    provider = make_identity_provider()
    assertion = read_assertion(make_assertion(provider, organization_id=f"urn:oid:{ORG.oid}"))
    authenticator = PeerAuthenticator(
        CachedRegistry(Registry(), FacilityRepository()), None, local_node="ARCHIVE"
    )

    # When the request came with the hospital's client certificate, it is the hospital's request
    assert (
        authenticator.check_xua(setup.certs.valid.certificate_pem, assertion, address="127.0.0.1") == ORG.oid
    )
    # When it came with the neighbour's certificate, or with none, it is refused
    with pytest.raises(NotAuthenticated, match=OTHER.oid):
        authenticator.check_xua(setup.certs.other_organisation.certificate_pem, assertion, address=None)
    with pytest.raises(NotAuthenticated):
        authenticator.check_xua(None, assertion, address=None)
