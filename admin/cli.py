"""Admin CLI for the configuration registry: ``python -m admin``.

    python -m admin org add 1.2.246.10.12345678.10 "Demo Hospital" --trusted-issuer 1.2.246.21
    python -m admin ae add DEMO_PACS 1.2.246.10.12345678.10 10.0.0.5 11112 --role store --role query
    python -m admin ae add DEMO_MOD 1.2.246.10.12345678.10 mod1.example 104 --address 10.0.1.0/28
    python -m admin ae list [--org OID]
    python -m admin ae remove DEMO_PACS
    python -m admin hl7-facility add XYZ_RADIOLOGY 1.2.246.10.12345678.10 --namespace ADT1=1.2.246.10.12345678.22.2026
    python -m admin patient history 020516C903K --issuer 1.2.246.21

On AWS the table names come from the environment (TABLE_* variables, as the stack outputs them);
``--endpoint URL`` points at the local cloud and uses its table names.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict

from archive.config import Settings
from archive.data.facilities import FacilityRepository
from archive.data.models import bind_models
from archive.data.patients import PatientRepository
from archive.data.registry import Registry
from archive.errors import ArchiveError
from archive.model.identity import PatientIdentity
from archive.model.organisations import ROLES, AEInfo, FacilityInfo, OrganisationInfo

from local.resources import local_table_names


def _settings(endpoint: str | None) -> Settings:
    if endpoint:
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "local")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "local")
        return Settings(
            region=os.environ.get("AWS_REGION", "eu-north-1"),
            bucket="unused",
            tables=local_table_names(),
            endpoint_url=endpoint,
        )
    return Settings.from_env()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m admin", description=(__doc__ or "").splitlines()[0])
    p.add_argument("--endpoint", help="AWS endpoint (the local cloud, e.g. http://127.0.0.1:4566)")
    sub = p.add_subparsers(dest="kind", required=True)

    org = sub.add_parser("org", help="organisations").add_subparsers(dest="action", required=True)
    add = org.add_parser("add")
    add.add_argument("oid")
    add.add_argument("name")
    add.add_argument("--trusted-issuer", action="append", default=[], help="assigning authority OID")
    add.add_argument("--default-issuer", help="issuer assumed when an image carries none")
    add.add_argument("--replace", action="store_true")
    org.add_parser("list")
    rm = org.add_parser("remove")
    rm.add_argument("oid")

    ae = sub.add_parser("ae", help="application entities").add_subparsers(dest="action", required=True)
    add = ae.add_parser("add")
    add.add_argument("ae_title")
    add.add_argument("org_oid")
    add.add_argument("host")
    add.add_argument("port", type=int)
    add.add_argument("--role", action="append", default=[], choices=ROLES)
    add.add_argument("--tls", action="store_true")
    add.add_argument(
        "--address",
        action="append",
        default=[],
        metavar="ADDRESS|NETWORK|HOST",
        help="where associations from this AE may come from (repeatable): an IP address, a network "
        "in CIDR form, or a host name resolved now; default: the addresses of HOST",
    )
    add.add_argument("--description")
    add.add_argument("--replace", action="store_true")
    ls = ae.add_parser("list")
    ls.add_argument("--org")
    rm = ae.add_parser("remove")
    rm.add_argument("ae_title")

    hl7 = sub.add_parser("hl7-facility", help="HL7 sending facilities (MSH-4) of organisations")
    hl7_actions = hl7.add_subparsers(dest="action", required=True)
    add = hl7_actions.add_parser("add")
    add.add_argument("facility", help="MSH-4 as sent (namespace ID or universal ID)")
    add.add_argument("org_oid")
    add.add_argument(
        "--namespace",
        action="append",
        default=[],
        metavar="NAMESPACE=OID",
        help="a namespace-only assigning authority (PID-3.4) and the issuer OID it stands for",
    )
    add.add_argument("--replace", action="store_true")
    hl7_actions.add_parser("list")
    rm = hl7_actions.add_parser("remove")
    rm.add_argument("facility")

    patient = sub.add_parser("patient", help="patient identities").add_subparsers(
        dest="action", required=True
    )
    history = patient.add_parser("history", help="every HL7 change to the identity, oldest first")
    history.add_argument("patient_id")
    history.add_argument("--issuer", required=True, help="assigning authority OID")
    return p


def _hl7_facility(args: argparse.Namespace) -> None:
    facilities = FacilityRepository()
    if args.action == "add":
        Registry().get_organisation(args.org_oid)
        namespaces = dict(item.split("=", 1) for item in args.namespace)
        facilities.add(FacilityInfo(args.facility, args.org_oid, namespaces), replace=args.replace)
    elif args.action == "list":
        for facility in facilities.list():
            print(json.dumps(asdict(facility)))
    else:
        facilities.remove(args.facility)


def _patient(args: argparse.Namespace, settings: Settings) -> None:
    key = PatientIdentity(args.patient_id, args.issuer).key
    for change in PatientRepository(settings).history(key):
        print(json.dumps(change, ensure_ascii=False))


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    settings = _settings(args.endpoint)
    bind_models(settings)
    registry = Registry()
    try:
        if args.kind == "hl7-facility":
            _hl7_facility(args)
        elif args.kind == "patient":
            _patient(args, settings)
        elif args.kind == "org":
            if args.action == "add":
                registry.add_organisation(
                    OrganisationInfo(args.oid, args.name, tuple(args.trusted_issuer), args.default_issuer),
                    replace=args.replace,
                )
            elif args.action == "list":
                for o in registry.list_organisations():
                    print(json.dumps(asdict(o)))
            else:
                registry.remove_organisation(args.oid)
        else:
            if args.action == "add":
                registered = registry.add_ae(
                    AEInfo(
                        args.ae_title,
                        args.org_oid,
                        args.host,
                        args.port,
                        args.tls,
                        tuple(args.role),
                        args.description,
                        tuple(args.address),
                    ),
                    replace=args.replace,
                )
                print(json.dumps(asdict(registered)))
            elif args.action == "list":
                for a in registry.list_aes(args.org):
                    print(json.dumps(asdict(a)))
            else:
                registry.remove_ae(args.ae_title)
    except (ArchiveError, ValueError) as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
