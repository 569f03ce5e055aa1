"""Admin CLI for the configuration registry: ``python -m admin``.

    python -m admin org add 1.2.246.10.12345678.10 "Demo Hospital" --trusted-issuer 1.2.246.21
    python -m admin ae add DEMO_PACS 1.2.246.10.12345678.10 10.0.0.5 11112 --role store --role query
    python -m admin ae add DEMO_MOD 1.2.246.10.12345678.10 mod1.example 104 --address 10.0.1.0/28
    python -m admin ae list [--org OID]
    python -m admin ae remove DEMO_PACS
    python -m admin hl7-facility add XYZ_RADIOLOGY 1.2.246.10.12345678.10 --namespace ADT1=1.2.246.10.12345678.22.2026
    python -m admin patient history 020516C903K --issuer 1.2.246.21
    python -m admin commitment undeliverable
    python -m admin commitment show 1.2.826.0.1.3680043.10.1394.77
    python -m admin commitment redeliver 1.2.826.0.1.3680043.10.1394.77
    python -m admin xds archive set --oid 1.2.246.x --uid-root 1.2.246.x.1 --repository-unique-id 1.2.246.x.2
    python -m admin xds domain set 1.2.246.21 --class-code 'CODE^SCHEME^Display' ...
    python -m admin xds org set 1.2.246.10.12345678.10 --domain 1.2.246.21 --stability-seconds 60
    python -m admin xds-access idp-add https://idp.example/sts --cert idp.pem
    python -m admin xds-access repository-set 1.2.246.x --repository-unique-id 1.2.246.x.5 --code classCode=X^1.2.3
    python -m admin xds-access deny '020516C903K^^^&1.2.246.21&ISO' [--document UID]
    python -m admin xds-access log '020516C903K^^^1.2.246.21'
    python -m admin ian list --state FAILED
    python -m admin ian resend STUDY_UID [--ae DEMO_PACS]
    python -m admin rejection show <note SOP Instance UID>
    python -m admin rejection list --study <Study Instance UID>
    python -m admin rejection revoke <note SOP Instance UID> --by "J. Operator" --reason "ticket 123"
    python -m admin retention rule set 1.2.246.10.12345678.10 '*' --years 12
    python -m admin retention show <Study Instance UID>
    python -m admin retention due [--until 2040-01-01T00:00:00+00:00]
    python -m admin retention job <job id>
    python -m admin retention death record --patient 020516C903K --issuer 1.2.246.21 --date 20260101 --by ... --reason ...
    python -m admin destruction approve <Study Instance UID> --by "Archivist A." --reason "decision 3/2026"
    python -m admin destruction show <Study Instance UID>
    python -m admin hold place --study <UID> --by "Lawyer L." --reason "case 7/2026"
    python -m admin hold release <hold id> --study <UID> --by "Lawyer L."
    python -m admin disclosures verify 020516C903K --issuer 1.2.246.21
    python -m admin disclosures report 020516C903K --issuer 1.2.246.21 --format csv
    python -m admin disclosures anchor
    python -m admin restore study <Study Instance UID> [--ae DEMO_PACS]
    python -m admin restore show <Study Instance UID>

On AWS the table names come from the environment (TABLE_* variables, as the stack outputs them);
``--endpoint URL`` points at the local cloud and uses its table names.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from archive.config import Settings
from archive.data.access_log import AccessLog
from archive.data.commitments import CommitmentRepository
from archive.data.destruction import DestructionRepository
from archive.data.facilities import FacilityRepository
from archive.data.index import IndexRepository
from archive.data.models import bind_models
from archive.data.objects import ObjectStore
from archive.data.patients import PatientRepository, refusal_log_key
from archive.data.registration import (
    NotificationRepository,
    RegistrationConfigRepository,
    queue_url_by_name,
)
from archive.data.registry import Registry
from archive.data.rejections import RejectionRepository
from archive.data.retention import RetentionJobQueue, RetentionRepository
from archive.data.xds_access import DisclosureDenials, DocumentRepository, XdsAccessConfig
from archive.data.xds_registry import XdsRegistry
from archive.errors import ArchiveError
from archive.model.disclosure import report_csv
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
from archive.model.retention import JOB_PATIENT, ExpiryRejection, RetentionBasis, RetentionRule
from archive.model.xua import IdentityProvider
from archive.services.audit import build_audit_trail
from archive.services.availability import AvailabilityService
from archive.services.corrections import CorrectionService
from archive.services.destruction import DestructionService
from archive.services.disclosure import build_disclosure_log, normalised_patient
from archive.services.patients import PatientService
from archive.services.registration import RegistrationRequests
from archive.services.retention import RetentionService
from archive.services.storage_tiers import StorageTiers
from archive.topology import REGISTRATION_QUEUE, RETENTION_QUEUE

from local.resources import AUDIT_BUCKET as LOCAL_AUDIT_BUCKET
from local.resources import local_queue_name, local_settings

LOCAL_IAN_QUEUE = "archive-ian"
LOCAL_RESTORE_QUEUE = "archive-restore"


def _settings(endpoint: str | None) -> Settings:
    if endpoint:
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "local")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "local")
        return local_settings(
            endpoint,
            region=os.environ.get("AWS_REGION", "eu-north-1"),
            audit_bucket=LOCAL_AUDIT_BUCKET,
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
    add.add_argument(
        "--certificate-name",
        action="append",
        default=[],
        help="a name (CN=..., DNS:...) identifying the organisation's certificates, if they carry no urn:oid",
    )
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
    add.add_argument("--tls", action="store_true", help="connections to and from this AE use TLS")
    add.add_argument(
        "--certificate-name",
        action="append",
        default=[],
        help="the node's certificate must carry this name (CN=..., DNS:..., URI:...)",
    )
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
    refusals = patient.add_parser(
        "refusals", help="HL7 messages of an organisation refused before they named an identity"
    )
    refusals.add_argument("org_oid")

    commitment = sub.add_parser("commitment", help="storage commitment transactions").add_subparsers(
        dest="action", required=True
    )
    commitment.add_parser(
        "undeliverable", help="transactions whose report could not be delivered (alarmed), oldest first"
    )
    show = commitment.add_parser("show", help="one transaction: state, attempts, outcome counts")
    show.add_argument("transaction_uid")
    redeliver = commitment.add_parser(
        "redeliver", help="retry an UNDELIVERABLE transaction's report (after fixing the requester's AE)"
    )
    redeliver.add_argument("transaction_uid")

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

    access = sub.add_parser("xds-access", help="XDS callers: identity providers, repositories, denials, log")
    access_actions = access.add_subparsers(dest="action", required=True)
    idp = access_actions.add_parser("idp-add", help="trust an identity provider's signing certificate(s)")
    idp.add_argument("issuer", help="the exact saml:Issuer value")
    idp.add_argument("--cert", action="append", required=True, help="PEM file (repeat during a rollover)")
    repo = access_actions.add_parser(
        "repository-set", help="let an organisation's repository register (ITI-42)"
    )
    repo.add_argument("org_oid")
    repo.add_argument("--repository-unique-id", action="append", required=True)
    repo.add_argument(
        "--code", action="append", default=[], help="ATTRIBUTE=CODE^SCHEME, e.g. classCode=X^1.2.3"
    )
    deny = access_actions.add_parser("deny", help="a patient denies disclosure to other organisations")
    deny.add_argument("patient", help="CX, e.g. 020516C903K^^^&1.2.246.21&ISO")
    deny.add_argument("--document", default="*", help="a document uniqueId (or study UID); default every one")
    allow = access_actions.add_parser("withdraw-denial", help="withdraw a denial of disclosure")
    allow.add_argument("patient")
    allow.add_argument("--document", default="*")
    log = access_actions.add_parser(
        "log", help="every read of a patient's data (DICOM and XDS), oldest first"
    )
    log.add_argument("patient_key", help="<PatientID>^^^<issuer OID>")

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

    rejection = sub.add_parser("rejection", help="IOCM rejection notes (docs/conformance-iocm.md)")
    rejection_actions = rejection.add_subparsers(dest="action", required=True)
    show = rejection_actions.add_parser("show", help="a rejection note's record")
    show.add_argument("note_uid")
    ls = rejection_actions.add_parser("list", help="instances of a study that rejection notes hide now")
    ls.add_argument("--study", required=True)
    revoke = rejection_actions.add_parser("revoke", help="show the instances a note rejected again")
    revoke.add_argument("note_uid")
    revoke.add_argument("--by", required=True, help="who decided the revoke")
    revoke.add_argument("--reason", required=True, help="why (ticket, decision)")

    retention = sub.add_parser("retention", help="retention rules and study retention (docs/retention.md)")
    retention_actions = retention.add_subparsers(dest="action", required=True)
    rule = retention_actions.add_parser("rule", help="rules per organisation and study type")
    rule_actions = rule.add_subparsers(dest="rule_action", required=True)
    rule_set = rule_actions.add_parser("set")
    rule_set.add_argument("org_oid")
    rule_set.add_argument("study_type", help="a modality (CT, MG, ...) or * for any study")
    rule_set.add_argument("--years", type=int, default=0)
    rule_set.add_argument("--days", type=int, default=0)
    rule_set.add_argument(
        "--expiry-rejection",
        choices=[e.value for e in ExpiryRejection],
        default=ExpiryRejection.EXPIRED.value,
        help="what a 113039 rejection note may do: NEVER (A775), EXPIRED (only after the end, else "
        "A776), EARLY (early destruction; the Object Lock covers only --minimum-days)",
    )
    rule_set.add_argument(
        "--allow-early-destruction", action="store_true", help="the same as --expiry-rejection EARLY"
    )
    rule_set.add_argument(
        "--minimum-days",
        type=int,
        default=0,
        help="under EARLY: days from the study date that S3 locks and no early destruction shortens",
    )
    rule_set.add_argument(
        "--from",
        dest="basis",
        choices=["study-date", "death"],
        default="study-date",
        help="count the years from the study date, or from the patient's death when known",
    )
    rule_set.add_argument(
        "--unknown-death-years-from-birth",
        type=int,
        default=0,
        help="under --from death: while the death is not known, the end is this many years from "
        "birth (e.g. 120); without it (or a birth date) such a study is never due",
    )
    rule_set.add_argument(
        "--approval-required",
        action="store_true",
        help="destruction of such a study waits for an operator's approval (destruction approve)",
    )
    rule_set.add_argument("--by", help="who set the rule (recorded on the lengthening job)")
    rule_list = rule_actions.add_parser("list")
    rule_list.add_argument("org_oid")
    job = retention_actions.add_parser("job", help="a retention job's progress")
    job.add_argument("job_id")
    death = retention_actions.add_parser(
        "death", help="record or retract a patient's death; the patient's studies are recomputed"
    )
    death_actions = death.add_subparsers(dest="death_action", required=True)
    for name in ("record", "retract"):
        action = death_actions.add_parser(name)
        action.add_argument("--patient", required=True, help="Patient ID")
        action.add_argument("--issuer", required=True, help="assigning authority OID of the Patient ID")
        if name == "record":
            action.add_argument("--date", required=True, help="the day of death, YYYYMMDD")
        action.add_argument("--by", required=True, help="who records it")
        action.add_argument("--reason", required=True, help="why, or the source (death register, ...)")
    show = retention_actions.add_parser("show", help="a study's retention end and holds")
    show.add_argument("study_uid")
    due = retention_actions.add_parser("due", help="studies whose retention has ended (from the index)")
    due.add_argument("--until", help="UTC ISO time; default now")

    destruction = sub.add_parser("destruction", help="approvals and records of lawful destruction")
    destruction_actions = destruction.add_subparsers(dest="action", required=True)
    approve = destruction_actions.add_parser(
        "approve", help="approve destroying a study whose rule requires approval, once it is due"
    )
    approve.add_argument("study_uid")
    approve.add_argument("--by", required=True, help="who approves")
    approve.add_argument("--reason", required=True, help="why (decision, ticket)")
    records = destruction_actions.add_parser("show", help="a study's approval and destruction records")
    records.add_argument("study_uid")

    hold = sub.add_parser("hold", help="legal holds on a study or a patient")
    hold_actions = hold.add_subparsers(dest="action", required=True)
    for name in ("place", "release", "list"):
        action = hold_actions.add_parser(name)
        if name == "release":
            action.add_argument("hold_id")
        target = action.add_mutually_exclusive_group(required=True)
        target.add_argument("--study", help="Study Instance UID")
        target.add_argument("--patient", help="Patient ID (with --issuer)")
        action.add_argument("--issuer", help="assigning authority OID of --patient")
        if name != "list":
            action.add_argument("--by", required=True, help="who places or releases the hold")
        if name == "place":
            action.add_argument("--reason", required=True, help="why (case, decision)")
    disclosures = sub.add_parser("disclosures", help="the disclosure log").add_subparsers(
        dest="action", required=True
    )
    for name, text in (
        ("verify", "prove the patient's chains intact, or name the first broken link (exit 2)"),
        ("report", "every disclosure of the patient: to whom, why, when (UTC), how"),
    ):
        command = disclosures.add_parser(name, help=text)
        command.add_argument("patient", help="Patient ID (with --issuer), or <id>^^^<issuer>")
        command.add_argument("--issuer", help="assigning authority OID")
        if name == "report":
            command.add_argument("--format", choices=("json", "csv"), default="json")
    anchor = disclosures.add_parser("anchor", help="anchor recently grown chains in the audit bucket now")
    anchor.add_argument("--hours", type=float, default=3.0, help="look-back window")
    restore = sub.add_parser("restore", help="restores from cold storage classes (docs/storage.md)")
    restore_actions = restore.add_subparsers(dest="action", required=True)
    start = restore_actions.add_parser("study", help="restore a whole study (one request, idempotent)")
    start.add_argument("study_uid")
    start.add_argument("--ae", help="an AE to send an IAN (ONLINE) to when the restore is done")
    show = restore_actions.add_parser("show", help="a study's NEARLINE count and restore state")
    show.add_argument("study_uid")
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


def _restore(args: argparse.Namespace, settings: Settings) -> None:
    if args.action == "study" and not settings.restore_queue_url:
        settings = replace(settings, restore_queue_url=queue_url_by_name(settings, LOCAL_RESTORE_QUEUE))
    tiers = StorageTiers.from_settings(settings)
    if args.action == "study":
        ticket = tiers.restore_study(args.study_uid, args.ae)
        print(json.dumps({**asdict(ticket), "retry_comment": ticket.retry_comment()}, default=str))
        return
    state = tiers.state(args.study_uid)
    if state is None:
        raise ArchiveError(f"study {args.study_uid} is not in the index")
    print(json.dumps(asdict(state), default=sorted_or_str))


def sorted_or_str(value: object) -> object:
    return sorted(value) if isinstance(value, frozenset | set) else str(value)


def _commitment(args: argparse.Namespace, settings: Settings) -> int:
    commitments = CommitmentRepository(settings)
    if args.action == "undeliverable":
        for transaction in commitments.undeliverable():
            print(json.dumps(transaction.as_json()))
        return 0
    if args.action == "show":
        found = commitments.get(args.transaction_uid)
        if found is None:
            print(f"error: no commitment transaction {args.transaction_uid}", file=sys.stderr)
            return 1
        print(json.dumps(found.as_json()))
        return 0
    if not commitments.redeliver(args.transaction_uid, now=time.time()):
        print(f"error: {args.transaction_uid} is not an UNDELIVERABLE transaction", file=sys.stderr)
        return 1
    return 0


def _retention_service(settings: Settings, *, jobs: bool = False) -> RetentionService:
    if jobs and not settings.retention_queue_url:
        settings = replace(
            settings, retention_queue_url=queue_url_by_name(settings, local_queue_name(RETENTION_QUEUE))
        )
    return RetentionService.configured(
        settings,
        ObjectStore(settings),
        jobs=RetentionJobQueue(settings) if jobs else None,
        registry=XdsRegistry(settings),  # a hold also holds the studies' manifests
    )


def _retention(args: argparse.Namespace, settings: Settings) -> None:
    changes = args.action == "death" or (args.action == "rule" and args.rule_action == "set")
    service = _retention_service(settings, jobs=changes)
    if args.action == "death":
        identity = PatientIdentity(args.patient, args.issuer)
        PatientService(PatientRepository(settings)).record_death(
            identity,
            args.date if args.death_action == "record" else "",
            by=args.by,
            reason=args.reason,
            at=datetime.now(UTC),
        )
        job = service.start_job(JOB_PATIENT, identity.key, by=args.by, reason=args.reason)
        print(json.dumps({"job_id": job.job_id, "patient": identity.key}))
    elif args.action == "job":
        found_job = service.job(args.job_id)
        if found_job is None:
            raise ArchiveError(f"no retention job {args.job_id}")
        print(json.dumps(asdict(found_job), default=str))
    elif args.action == "rule":
        if args.rule_action == "set":
            service.set_rule(
                RetentionRule(
                    args.org_oid,
                    args.study_type,
                    args.years,
                    args.days,
                    expiry_rejection=ExpiryRejection.EARLY
                    if args.allow_early_destruction
                    else ExpiryRejection(args.expiry_rejection),
                    minimum_days=args.minimum_days,
                    basis=RetentionBasis.DEATH if args.basis == "death" else RetentionBasis.STUDY_DATE,
                    unknown_death_years_from_birth=args.unknown_death_years_from_birth,
                    approval_required=args.approval_required,
                )
            )
            # Lengthen what the rule covers already, as a job (never shortens: a shorter rule
            # changes nothing); `retention job <id>` shows its progress.
            job = service.grow_rule(args.org_oid, args.study_type, by=args.by)
            print(json.dumps({"job_id": job.job_id}))
        else:
            for rule in service.rules_of(args.org_oid):
                print(json.dumps(asdict(rule)))
    elif args.action == "show":
        found = service.retention_of(args.study_uid)
        if found is None:
            raise ValueError(f"no study {args.study_uid}")
        print(json.dumps(asdict(found), default=str))
    else:
        until = datetime.fromisoformat(args.until) if args.until else datetime.now(UTC)
        for study_uid, end in service.studies_due(until):
            print(json.dumps({"study_uid": study_uid, "retention_end": end.isoformat()}))


def _destruction(args: argparse.Namespace, settings: Settings) -> None:
    repository = DestructionRepository()
    if args.action == "approve":
        service = DestructionService(RetentionRepository(), repository, ObjectStore(settings))
        approved = service.approve(args.study_uid, by=args.by, reason=args.reason)
        print(json.dumps(asdict(approved), default=str))
    else:
        approval = repository.approval_of(args.study_uid)
        print(json.dumps({"approval": asdict(approval) if approval else None}, default=str))
        for record in repository.records_of(args.study_uid):
            print(json.dumps(asdict(record), default=str))


def _hold(args: argparse.Namespace, settings: Settings) -> None:
    service = _retention_service(settings)
    if args.patient and not args.issuer:
        raise ValueError("--patient needs --issuer")
    target = {
        "study_uid": args.study,
        "patient_key": PatientIdentity(args.patient, args.issuer).key if args.patient else None,
    }
    if args.action == "place":
        placed, objects = service.place_hold(by=args.by, reason=args.reason, **target)
        print(json.dumps({**asdict(placed), "objects_held": objects}, default=str))
    elif args.action == "release":
        released = service.release_hold(args.hold_id, by=args.by, **target)
        print(json.dumps({"hold_id": args.hold_id, "objects_released": released}))
    else:
        for found in service.holds_on(**target):
            print(json.dumps(asdict(found), default=str))


def _rejection(args: argparse.Namespace, settings: Settings) -> None:
    index = IndexRepository(settings)
    if args.action == "show":
        corrections = CorrectionService(RejectionRepository(settings), index, ObjectStore(settings))
        print(json.dumps(asdict(corrections.rejection(args.note_uid)), default=str))
    elif args.action == "list":
        corrections = CorrectionService(RejectionRepository(settings), index, ObjectStore(settings))
        for rejected in corrections.rejected_in_study(args.study):
            print(json.dumps(asdict(rejected)))
    else:
        # A revoke shows patient data again: audited (110103, U) before the CLI exits.
        trail = build_audit_trail(settings, background=False)
        # A revoke asks for the studies' new registration version (the instances are back).
        if not settings.registration_queue_url and settings.endpoint_url:
            settings = replace(
                settings,
                registration_queue_url=queue_url_by_name(settings, local_queue_name(REGISTRATION_QUEUE)),
            )
        registration = (
            RegistrationRequests.from_settings(settings) if settings.registration_queue_url else None
        )
        corrections = CorrectionService(
            RejectionRepository(settings),
            index,
            ObjectStore(settings),
            audit_trail=trail,
            on_study_changed=registration.study_changed if registration else None,
        )
        try:
            outcome = corrections.revoke(args.note_uid, by=args.by, reason=args.reason)
        finally:
            trail.close()
        print(
            json.dumps(
                {"note_uid": args.note_uid, "restored": outcome.restored, "state": outcome.record.state}
            )
        )


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
    if args.action == "refusals":
        key = refusal_log_key(args.org_oid)
    else:
        key = PatientIdentity(args.patient_id, args.issuer).key
    for change in PatientRepository(settings).history(key):
        print(json.dumps(change, ensure_ascii=False))


def _xds_access(args: argparse.Namespace) -> None:
    if args.action == "idp-add":
        certificates = tuple(Path(c).read_text("ascii") for c in args.cert)
        XdsAccessConfig().set_identity_provider(IdentityProvider(args.issuer, certificates))
    elif args.action == "repository-set":
        codes: dict[str, list[str]] = {}
        for item in args.code:
            attribute, _, value = item.partition("=")
            codes.setdefault(attribute, []).append(value)
        XdsAccessConfig().set_repository(
            DocumentRepository(
                args.org_oid, tuple(args.repository_unique_id), {k: tuple(v) for k, v in codes.items()}
            )
        )
    elif args.action == "deny":
        DisclosureDenials().deny(normalised_patient(args.patient), args.document)
    elif args.action == "withdraw-denial":
        DisclosureDenials().withdraw(normalised_patient(args.patient), args.document)
    else:
        for record in AccessLog().for_patient(args.patient_key):
            print(json.dumps(record.attribute_values, default=str, ensure_ascii=False))


def _disclosures(args: argparse.Namespace, settings: Settings) -> int:
    log = build_disclosure_log(settings)
    if args.action == "anchor":
        print(json.dumps({"anchors_written": log.anchor(lookback=timedelta(hours=args.hours))}))
        return 0
    if "^^^" in args.patient:
        key = args.patient
    elif args.issuer:
        key = PatientIdentity(args.patient, args.issuer).key
    else:
        raise ValueError("give --issuer, or the patient as <id>^^^<issuer>")
    if args.action == "verify":
        verdicts = log.verify(key)
        for verdict in verdicts:
            print(json.dumps(verdict.as_json(), ensure_ascii=False))
        return 0 if all(v.intact for v in verdicts) else 2
    rows = log.report(key)
    if args.format == "csv":
        sys.stdout.write(report_csv(rows))
    else:
        print(json.dumps({"patient": key, "disclosures": rows}, ensure_ascii=False, indent=1))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    settings = _settings(args.endpoint)
    bind_models(settings)
    registry = Registry()
    try:
        if args.kind == "commitment":
            return _commitment(args, settings)
        if args.kind == "disclosures":
            return _disclosures(args, settings)
        if args.kind == "hl7-facility":
            _hl7_facility(args)
        elif args.kind == "xds":
            _xds(args)
        elif args.kind == "xds-access":
            _xds_access(args)
        elif args.kind == "ian":
            _ian(args, settings)
        elif args.kind == "patient":
            _patient(args, settings)
        elif args.kind == "rejection":
            _rejection(args, settings)
        elif args.kind == "retention":
            _retention(args, settings)
        elif args.kind == "destruction":
            _destruction(args, settings)
        elif args.kind == "hold":
            _hold(args, settings)
        elif args.kind == "restore":
            _restore(args, settings)
        elif args.kind == "org":
            if args.action == "add":
                registry.add_organisation(
                    OrganisationInfo(
                        args.oid,
                        args.name,
                        tuple(args.trusted_issuer),
                        args.default_issuer,
                        tuple(args.certificate_name),
                    ),
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
                        tuple(args.certificate_name),
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
