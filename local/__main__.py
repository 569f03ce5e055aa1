"""``make run``: start the whole archive locally and print where everything listens."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import threading
from pathlib import Path

from .cloud import DEMO_AES, DEMO_ORG, ROOT, LocalCloud

DATA_DIR = ROOT / ".local-cloud"


def banner(cloud: LocalCloud) -> str:
    assert cloud.settings is not None
    aes = "\n".join(
        f"      {ae.ae_title:<10} {ae.host}:{ae.port}  ({', '.join(ae.roles)})" for ae in DEMO_AES
    )
    pki = cloud.pki
    tls = ""
    if pki is not None:
        client = f"{pki.demo_client.key_path} {pki.demo_client.cert_path}"
        tls = f"""
 DICOM over TLS     127.0.0.1:{cloud.dicom_tls_port}   client certificate required (demo CA below)
 MLLP over TLS      127.0.0.1:{cloud.hl7_tls_port}
 XDS over TLS       {cloud.xds_tls_url}/xds/registry  /xds/repository  /xds/imaging
                    (client certificate required; its organisation must be the XUA organization-id)
 Customers' API     https://127.0.0.1:{cloud.https_port}/disclosures/notifications   (mutual TLS)
 Demo CA            {pki.ca.cert_path}
 Demo client cert   {pki.demo_client.cert_path} (+ .key), organisation {DEMO_ORG.oid}

 TLS:  /usr/bin/storescu +tls {client} +cf {pki.ca.cert_path} \\
         -aet DEMO_MOD -aec ARCHIVE 127.0.0.1 {cloud.dicom_tls_port} FILES
"""
    if cloud.state_dir is not None:
        kept = f"{cloud.state_dir}/ (kept across restarts)"
        after_stop = "the data stays. Start afresh: make run FRESH=1 (python -m local --fresh)"
    else:
        kept = "in memory only"
        after_stop = "the data is gone after a stop."
    ians = ", ".join(f"{ae.ae_title} at {ae.host}:{ae.port}" for ae in DEMO_AES if "ian" in ae.roles)
    return f"""
==========================================================================
 National imaging archive: local cloud is up
--------------------------------------------------------------------------
 DICOM listener     127.0.0.1:{cloud.dicom_port}   AE title {cloud.settings.archive_ae_title}
 HL7 listener       127.0.0.1:{cloud.hl7_port}   MLLP (ADT A40, A47, A08, A31){tls}
 Admin API          http://127.0.0.1:{cloud.http_port}/admin/disclosures?patient_id=ID&issuer=OID
 AWS stand-in       {cloud.endpoint}   (moto: S3, DynamoDB, SQS, Secrets Manager)
 Data               {kept}
 Lambda handlers    {", ".join([*dict.fromkeys(p.function.name for p in cloud.pollers), *cloud.function_processes])} (fed from SQS)
 Demo organisation  {DEMO_ORG.oid} ({DEMO_ORG.name})
{aes}
 XDS (SOAP 1.2)     {cloud.xds_url}/xds/registry  /xds/repository  /xds/imaging
 Demo IdP (XUA)     .local-cloud/demo-idp/key.pem, cert.pem (trusted); see README "XDS"
 Registration       committed studies -> XDS-I.b manifest after {cloud.registration_stability_seconds:g} s without new images
 IANs go to         {ians or "nobody (no AE has the ian role)"}; pending/failed: admin ian list
 Logs               {cloud.log_dir}/

 Try:  /usr/bin/storescu -aet DEMO_MOD -aec ARCHIVE 127.0.0.1 {cloud.dicom_port} FILES
 HL7:  .venv/bin/mllp_send --loose -f MESSAGE.hl7 -p {cloud.hl7_port} 127.0.0.1
 Admin: python -m admin --endpoint {cloud.endpoint} org list
        python -m admin --endpoint {cloud.endpoint} ian list --state PENDING
        python -m admin --endpoint {cloud.endpoint} disclosures report ID --issuer OID
 Ctrl-C stops everything; {after_stop}
==========================================================================
"""


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the archive locally")
    parser.add_argument("--dicom-port", type=int, default=11112)
    parser.add_argument("--moto-port", type=int, default=4566)
    parser.add_argument("--hl7-port", type=int, default=2575)
    parser.add_argument("--xds-port", type=int, default=8080)
    parser.add_argument("--dicom-tls-port", type=int, default=2762)
    parser.add_argument("--hl7-tls-port", type=int, default=2576)
    parser.add_argument("--xds-tls-port", type=int, default=8444, help="XDS over TLS (client certificates)")
    parser.add_argument("--http-port", type=int, default=8081, help="admin API (API Gateway stand-in)")
    parser.add_argument("--https-port", type=int, default=8443, help="customers' API, mutual TLS")
    parser.add_argument("--commitment-wait", type=float, default=30.0)
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=DATA_DIR,
        help="the stand-in's data (DIR/aws), logs and TLS material; kept across restarts",
    )
    parser.add_argument("--fresh", action="store_true", help="forget the data kept from earlier runs")
    parser.add_argument("--in-memory", action="store_true", help="keep no data at all (as the tests do)")
    args = parser.parse_args()
    state_dir = None if args.in_memory else args.data_dir / "aws"
    if args.fresh and state_dir is not None and state_dir.exists():
        shutil.rmtree(state_dir)
        print(f"starting afresh: removed {state_dir}", flush=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("botocore").setLevel(logging.WARNING)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    cloud = LocalCloud(
        moto_port=args.moto_port,
        dicom_port=args.dicom_port,
        hl7_port=args.hl7_port,
        xds_port=args.xds_port,
        dicom_tls_port=args.dicom_tls_port,
        hl7_tls_port=args.hl7_tls_port,
        xds_tls_port=args.xds_tls_port,
        http_port=args.http_port,
        https_port=args.https_port,
        settings_overrides={"commitment_wait_seconds": args.commitment_wait},
        log_dir=args.data_dir,
        tls_dir=args.data_dir / "tls",
        state_dir=state_dir,
    )
    try:
        cloud.start()
        print(banner(cloud), flush=True)
        stop.wait()
        print("stopping ...", flush=True)
    finally:
        cloud.stop()
        print("stopped.", flush=True)
        logging.shutdown()
    # Everything is stopped and flushed. Skip the interpreter's teardown of this large process
    # (modules, abandoned poller threads): measured at about 3 s on a loaded machine after Ctrl-C.
    os._exit(0)


if __name__ == "__main__":
    main()
