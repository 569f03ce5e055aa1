"""MLLP over TLS: the hl7 package's asyncio MLLP client (and openssl s_client, as the README shows)
against the HL7 listener's TLS port. The client certificate must identify the organisation of the
sending facility (MSH-4); otherwise AR and the connection is closed."""

from __future__ import annotations

import asyncio
import re
import ssl
import subprocess
from pathlib import Path

import hl7
import pytest
from archive.model.identity import PatientIdentity
from archive.model.organisations import OrganisationInfo
from hl7.mllp import open_hl7_connection

from local.cloud import DEMO_ORG, ROOT, LocalCloud
from local.pki import Issued
from tests.support.audit import wait_for_record
from tests.support.dicom import HETU_ISSUER
from tests.support.hl7 import TEMP_ISSUER, Ack, adt, fresh_id, wait_for_change
from tests.support.tls import CustomerCertificates, client_context, customer_certificates

OTHER = OrganisationInfo("1.2.246.10.13131313.30", "Other HL7 sender", (HETU_ISSUER,), HETU_ISSUER)


@pytest.fixture(scope="module")
def certs(cloud: LocalCloud, tmp_path_factory: pytest.TempPathFactory) -> CustomerCertificates:
    cloud.register(OTHER)
    return customer_certificates(cloud, tmp_path_factory.mktemp("tls-hl7"), DEMO_ORG.oid, OTHER.oid)


async def _exchange(port: int, context: ssl.SSLContext, messages: list[bytes]) -> tuple[list[Ack], bool]:
    """Send the messages on one TLS connection; their ACKs and whether the archive then closed it."""
    reader, writer = await open_hl7_connection("127.0.0.1", port, ssl=context, encoding="latin-1")
    acks = []
    try:
        for message in messages:
            try:
                writer.writemessage(hl7.parse(message.decode("ascii")))
                await writer.drain()
                acks.append(Ack.parse(str(await asyncio.wait_for(reader.readmessage(), 60))))
            except (asyncio.IncompleteReadError, ConnectionError):
                return acks, True
        try:
            closed = reader.at_eof() or await asyncio.wait_for(reader.read(1), 5) == b""
        except TimeoutError:
            closed = False
    finally:
        writer.close()
    return acks, closed


def exchange(port: int, issued: Issued, ca: Path, messages: list[bytes]) -> tuple[list[Ack], bool]:
    return asyncio.run(_exchange(port, client_context(issued, ca), messages))


def test_a_message_over_tls_with_the_facilitys_organisation_certificate_is_accepted_and_audited(
    cloud: LocalCloud, certs: CustomerCertificates
) -> None:
    # Given the demo hospital's certificate and a name update from its facility XYZ_RADIOLOGY
    patient_id = fresh_id()
    message = adt("A08", patient_id, name="Testinen^Tiina")
    control_id = message.split(b"|")[9].decode()

    # When its RIS sends it over MLLP/TLS
    acks, _ = exchange(cloud.hl7_tls_port, certs.valid, certs.ca_path, [message])

    # Then it is accepted, applied, and the patient record change is audited (110110)
    assert [a.code for a in acks] == ["AA"]
    wait_for_change(cloud, PatientIdentity(patient_id, TEMP_ISSUER), control_id)
    record, document = wait_for_record(
        cloud, lambda r, doc: r["event"] == "110110" and patient_id in r["xml"]
    )
    assert record["outcome"] == 0
    assert (
        document.find("ParticipantObjectIdentification")
        .get("ParticipantObjectID")
        .startswith(f"{patient_id}^^^&{TEMP_ISSUER}&ISO")
    )


def test_another_organisations_certificate_gets_ar_and_the_connection_closed(
    cloud: LocalCloud, certs: CustomerCertificates
) -> None:
    # Given a trusted certificate of another organisation, sending as the demo hospital's facility
    messages = [adt("A08", fresh_id()), adt("A08", fresh_id())]

    # When it sends two messages on one connection
    acks, closed = exchange(cloud.hl7_tls_port, certs.other_organisation, certs.ca_path, messages)

    # Then the first is rejected, the connection closed, and the refusal audited (110114)
    assert [a.code for a in acks] == ["AR"]
    assert OTHER.oid in acks[0].text
    assert closed
    wait_for_record(cloud, lambda r, doc: r["event"] == "110114" and "XYZ_RADIOLOGY" in r["xml"])


def test_a_certificate_from_an_unknown_ca_fails_the_handshake(
    cloud: LocalCloud, certs: CustomerCertificates
) -> None:
    # When a client presents a certificate from a CA the archive does not trust
    try:
        acks, closed = exchange(cloud.hl7_tls_port, certs.unknown_ca, certs.ca_path, [adt("A08", fresh_id())])
    except (ssl.SSLError, ConnectionError):  # TLS 1.2 fails in the handshake, TLS 1.3 at the first read
        acks, closed = [], True
    # Then no message is answered, the connection is gone, and a security alert is audited (110113)
    assert acks == [] and closed
    wait_for_record(
        cloud,
        lambda r, doc: (
            r["event"] == "110113"
            and f":{cloud.hl7_tls_port}" in r["xml"]
            and "unable to get local issuer certificate" in r["xml"]
        ),
    )


def test_openssl_s_client_sends_a_framed_message_as_the_readme_shows(
    cloud: LocalCloud, certs: CustomerCertificates, tmp_path: Path
) -> None:
    # Given a message file (LF line ends, as an editor saves it) and the README's command line
    assert cloud.pki is not None
    message = tmp_path / "message.hl7"
    message.write_bytes(adt("A08", fresh_id()).replace(b"\r", b"\n"))
    readme = (ROOT / "README.md").read_text()
    (command,) = re.findall(r"^\(printf .*?-CAfile \$T/ca\.pem$", readme, flags=re.MULTILINE | re.DOTALL)
    command = command.replace("2576", str(cloud.hl7_tls_port)).replace("\\\n", " ")

    # When it runs with the demo hospital's certificate
    result = subprocess.run(
        ["bash", "-c", f"T={cloud.pki.ca.cert_path.parent}; {command}"],
        cwd=tmp_path,
        capture_output=True,
        timeout=60,
        check=False,
    )

    # Then the ACK comes back: AA
    assert b"MSA|AA|" in result.stdout, result.stderr
