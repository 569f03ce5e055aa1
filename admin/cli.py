"""Admin CLI for the configuration registry: ``python -m admin``.

    python -m admin org add 1.2.246.10.12345678.10 "Demo Hospital" --trusted-issuer 1.2.246.21
    python -m admin ae add DEMO_PACS 1.2.246.10.12345678.10 10.0.0.5 11112 --role store --role query
    python -m admin ae add DEMO_MOD 1.2.246.10.12345678.10 mod1.example 104 --address 10.0.1.0/28
    python -m admin ae list [--org OID]
    python -m admin ae remove DEMO_PACS
    python -m admin hl7-facility add XYZ_RADIOLOGY 1.2.246.10.12345678.10 --namespace ADT1=1.2.246.10.12345678.22.2026
    python -m admin patient history 020516C903K --issuer 1.2.246.21
    python -m admin xds archive set --oid 1.2.246.x --uid-root 1.2.246.x.1 --repository-unique-id 1.2.246.x.2
    python -m admin xds domain set 1.2.246.21 --class-code 'CODE^SCHEME^Display' ...
    python -m admin xds org set 1.2.246.10.12345678.10 --domain 1.2.246.21 --stability-seconds 60
    python -m admin ian list --state FAILED
    python -m admin ian resend STUDY_UID [--ae DEMO_PACS]

On AWS the table names come from the environment (TABLE_* variables, as the stack outputs them);
``--endpoint URL`` points at the local cloud and uses its table names.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, replace

from archive.config import Settings
from archive.data.facilities import FacilityRepository
from archive.data.models import bind_models
from archive.data.patients import PatientRepository
from archive.data.registration import (
    NotificationRepository,
    RegistrationConfigRepository,
    queue_url_by_name,
)
from archive.data.registry import Registry
from archive.errors import ArchiveError
from archive.model.identity import PatientIdentity
from archive.model.organisations import ROLES, AEInfo, FacilityInfo, OrganisationInfo
from archive.model.registration import (
    AffinityDomain,
    ArchiveIdentity,
    CodeSet,
    NotificationState,
    OrganisationRegistration,
    parse_code,
)
from archive.services.availability import AvailabilityService

from local.resources import local_table_names

LOCAL_IAN_QUEUE = "archive-ian"


def _settings(endpoint: str | None) -> Settings:
    if endpoint:
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "local")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "local")
        return Settings(
            region=os.environ.get("AWS_REGION", "eu-north-1"),
            bucket="unused",
            tables=local_table_names(),
            endpoint_url=endpoint,
            ian_queue_url=os.environ.get("IAN_QUEUE_URL") or None,
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

    xds = sub.add_parser("xds", help="registration of studies (XDS-I.b): identity and code sets")
    xds_scopes = xds.add_subparsers(dest="scope", required=True)
    archive = xds_scopes.add_parser("archive", help="the archive as Imaging Document Source").add_subparsers(
        dest="action", required=True
    )
    add = archive.add_parser("set")
    add.add_argument("--oid", required=True, help="the archive's OID (submission sets' sourceId)")
    add.add_argument("--uid-root", required=True, help="root of the manifests' UIDs")
    add.add_argument(
        "--repository-unique-id", required=True, help="RAD-69 repository = Retrieve Location UID"
    )
    add.add_argument("--retrieve-ae", default="ARCHIVE")
    add.add_argument("--home-community-id")
    add.add_argument("--name", default="National imaging archive")
    archive.add_parser("show")
    domain = xds_scopes.add_parser("domain", help="an affinity domain's code sets").add_subparsers(
        dest="action", required=True
    )
    add = domain.add_parser("set")
    add.add_argument("oid", help="assigning authority of the domain's patient IDs")
    add.add_argument("--name")
    _code_arguments(add)
    organisation = xds_scopes.add_parser(
        "org", help="an organisation's registration settings"
    ).add_subparsers(dest="action", required=True)
    add = organisation.add_parser("set")
    add.add_argument("org_oid")
    add.add_argument("--domain", required=True, help="the affinity domain (its OID)")
    add.add_argument("--timezone", default="Europe/Helsinki", help="zone of DICOM times without an offset")
    add.add_argument("--stability-seconds", type=float, default=60.0)
    add.add_argument("--register-uncommitted", action="store_true", help="also register uncommitted studies")
    add.add_argument("--disabled", action="store_true")
    _code_arguments(add)
    xds_scopes.add_parser("list", help="every registration configuration item")

    ian = sub.add_parser("ian", help="Instance Availability Notifications").add_subparsers(
        dest="action", required=True
    )
    ls = ian.add_parser("list", help="notifications not delivered yet or given up on")
    ls.add_argument("--state", choices=["PENDING", "FAILED"], default="PENDING")
    show = ian.add_parser("show", help="every notification of a study")
    show.add_argument("study_uid")
    resend = ian.add_parser("resend", help="queue a study's latest notification again")
    resend.add_argument("study_uid")
    resend.add_argument("--ae", help="only to this destination (default: all of the study's)")
    return p


def _code_arguments(p: argparse.ArgumentParser) -> None:
    help_code = "CODE^SCHEME^Display"
    p.add_argument("--class-code", type=parse_code, metavar=help_code)
    p.add_argument("--type-code", type=parse_code, metavar=help_code, help="when no Procedure Code Sequence")
    p.add_argument("--confidentiality-code", type=parse_code, action="append", metavar=help_code)
    p.add_argument("--facility-type", type=parse_code, metavar=help_code)
    p.add_argument("--practice-setting", type=parse_code, metavar=help_code)
    p.add_argument("--content-type", type=parse_code, metavar=help_code, help="the submission set's")
    p.add_argument("--language")


def _codes(args: argparse.Namespace) -> CodeSet:
    return CodeSet(
        class_code=args.class_code,
        type_code=args.type_code,
        confidentiality_codes=tuple(args.confidentiality_code) if args.confidentiality_code else None,
        healthcare_facility_type=args.facility_type,
        practice_setting=args.practice_setting,
        content_type=args.content_type,
        language_code=args.language,
    )


def _xds(args: argparse.Namespace) -> None:
    config = RegistrationConfigRepository()
    if args.scope == "list":
        for item in config.list():
            print(json.dumps(item, ensure_ascii=False))
    elif args.scope == "archive" and args.action == "show":
        print(json.dumps(config.archive().as_json()))
    elif args.scope == "archive":
        config.set_archive(
            ArchiveIdentity(
                oid=args.oid,
                uid_root=args.uid_root,
                repository_unique_id=args.repository_unique_id,
                retrieve_ae_title=args.retrieve_ae,
                home_community_id=args.home_community_id,
                name=args.name,
            )
        )
    elif args.scope == "domain":
        config.set_domain(AffinityDomain(args.oid, _codes(args), args.name))
    else:
        Registry().get_organisation(args.org_oid)
        config.set_organisation(
            OrganisationRegistration(
                org_oid=args.org_oid,
                affinity_domain=args.domain,
                codes=_codes(args),
                timezone=args.timezone,
                stability_seconds=args.stability_seconds,
                register_uncommitted=args.register_uncommitted,
                enabled=not args.disabled,
            )
        )


def _ian(args: argparse.Namespace, settings: Settings) -> None:
    if args.action == "resend" and not settings.ian_queue_url:
        settings = replace(settings, ian_queue_url=queue_url_by_name(settings, LOCAL_IAN_QUEUE))
    service = AvailabilityService.from_settings(settings) if settings.ian_queue_url else None
    notifications = NotificationRepository()
    if args.action == "list":
        found = list(notifications.open(NotificationState(args.state)))
    elif args.action == "show":
        found = notifications.of_study(args.study_uid)
    else:
        assert service is not None
        found = service.resend(args.study_uid, args.ae)
        if not found:
            raise ArchiveError(f"no notification of study {args.study_uid} to resend")
    for notification in found:
        print(json.dumps({**asdict(notification), "resent": args.action == "resend"}, default=str))


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
        elif args.kind == "xds":
            _xds(args)
        elif args.kind == "ian":
            _ian(args, settings)
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
