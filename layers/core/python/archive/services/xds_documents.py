"""The Document Registry (ITI-18 Registry Stored Query, ITI-42 Register Document Set-b) and the
Document Repository of the manifests (ITI-43 Retrieve Document Set), wired to the DynamoDB
registry, the disclosure rules and the disclosure log.

Order inside each transaction: decode, check, look up, apply the disclosure rules, write the
disclosure log, and only then build the answer that leaves.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import BinaryIO

from archive.audit.messages import Outcome
from archive.data.access_log import AccessLog
from archive.data.objects import ObjectStore, manifest_key
from archive.data.query_index import QueryIndex
from archive.data.xds_access import DisclosureDenials, XdsAccessConfig
from archive.data.xds_registry import XdsRegistry
from archive.errors import (
    DuplicateUniqueId,
    NotAuthorised,
    RegistryConflict,
    XdsDocumentUniqueIdError,
    XdsDuplicateUniqueIdInRegistry,
    XdsError,
    XdsPatientIdDoesNotMatch,
    XdsRegistryError,
    XdsRegistryMetadataError,
    XdsUnknownPatientId,
    XdsUnknownRepositoryId,
)
from archive.model.xds import Code, DocumentEntry, Folder, SubmissionSet
from archive.model.xds_query import QueryResult
from archive.model.xds_retrieve import RetrievedDocument
from archive.model.xds_submission import Submission
from archive.services.disclosure import (
    Caller,
    DisclosedItem,
    DisclosureLog,
    access_log_key,
    may_see,
    normalised_patient,
    record_disclosure,
)
from archive.services.xds_audit import XdsAudit
from archive.services.xds_exchange import Exchange, HttpAnswer, soap_answer
from archive.services.xds_query import QueryPolicy, check_resource_id, queried_patient, run_stored_query
from archive.xds import ns
from archive.xds.mtom import Attachment, new_content_id, write_mtom
from archive.xds.response import adhoc_query_response, registry_response
from archive.xds.retrieve import decode_retrieve_request, retrieve_response
from archive.xds.soap import envelope, serialize
from archive.xds.stored_query import decode_query_request
from archive.xds.submission import decode_submission

LOG = logging.getLogger("archive.xds.documents")
ITI18, ITI42, ITI43 = "ITI-18", "ITI-42", "ITI-43"
# ITI-42 code attributes and the values the configured code sets are checked against.
_CODE_ATTRIBUTES: dict[str, Callable[[DocumentEntry], Iterable[Code]]] = {
    "classCode": lambda d: [d.class_code],
    "typeCode": lambda d: [d.type_code],
    "formatCode": lambda d: [d.format_code],
    "confidentialityCode": lambda d: d.confidentiality_codes,
    "healthcareFacilityTypeCode": lambda d: [d.healthcare_facility_type],
    "practiceSettingCode": lambda d: [d.practice_setting],
    "eventCodeList": lambda d: d.event_codes,
}


@dataclass(frozen=True)
class Visible:
    """What of a result the caller may see, and the identifiers of what it hides."""

    result: QueryResult
    hidden: frozenset[str]


def visible_part(result: QueryResult, caller: Caller, denied: frozenset[str]) -> Visible:
    """The result without the objects the caller may not see, and without associations to them."""

    def ok(controller: str, unique_id: str) -> bool:
        return may_see(caller, controller=controller, unique_id=unique_id, denied=denied)

    documents = tuple(d for d in result.documents if ok(d.controller, d.unique_id))
    sets = tuple(s for s in result.submission_sets if ok(s.controller, s.unique_id))
    folders = tuple(f for f in result.folders if ok(f.controller, f.unique_id))
    hidden = frozenset(
        [
            *(d.entry_uuid for d in result.documents if d not in documents),
            *(s.entry_uuid for s in result.submission_sets if s not in sets),
            *(f.entry_uuid for f in result.folders if f not in folders),
        ]
    )
    kept = {d.entry_uuid for d in documents} | {s.entry_uuid for s in sets} | {f.entry_uuid for f in folders}
    associations = tuple(
        a
        for a in result.associations
        if a.source not in hidden
        and a.target not in hidden
        # an association alone (GetAssociations) shows only what the caller could see anyway
        and (a.source in kept or a.target in kept or not hidden)
    )
    return Visible(QueryResult(documents, sets, folders, associations), hidden)


def disclosed_items(
    objects: Iterable[DocumentEntry | SubmissionSet | Folder],
    *,
    study_of: Callable[[DocumentEntry], str | None],
) -> list[DisclosedItem]:
    grouped: dict[tuple[str, str, str | None], DisclosedItem] = {}
    for o in objects:
        study = study_of(o) if isinstance(o, DocumentEntry) else None
        key = (normalised_patient(o.patient_id), o.controller, study)
        item = grouped.setdefault(key, DisclosedItem(o.patient_id, o.controller, [], study))
        item.identifiers.append(o.unique_id)
    return list(grouped.values())


@cache
def _lookups() -> ThreadPoolExecutor:
    """Reads that run beside a stored query (one process-wide pool, threads start on first use)."""
    return ThreadPoolExecutor(max_workers=4, thread_name_prefix="xds-lookup")


class DocumentRegistryService:
    """ITI-18 and ITI-42 over the registry; ITI-43 for the manifests this archive stores."""

    def __init__(
        self,
        *,
        registry: XdsRegistry,
        index: QueryIndex,
        objects: ObjectStore,
        access: XdsAccessConfig,
        denials: DisclosureDenials,
        log: AccessLog,
        chain: DisclosureLog | None = None,
        repository_unique_id: Callable[[], str],
        policy: QueryPolicy = QueryPolicy(),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        audit: XdsAudit | None = None,
    ) -> None:
        self._audit = audit or XdsAudit(None, archive_node="")
        self._registry = registry
        self._index = index
        self._objects = objects
        self._access = access
        self._denials = denials
        self._log = log
        self._chain = chain
        self._repository_unique_id = repository_unique_id
        self._policy = policy
        self._clock = clock

    # --- ITI-18 ----------------------------------------------------------------------------

    def stored_query(self, exchange: Exchange) -> HttpAnswer:
        request = exchange.request
        caller = Caller.of(exchange.user)
        relates = request.message_id

        def answer(body: object) -> HttpAnswer:
            return soap_answer(body, action=ns.ACTION_ITI18_RESPONSE, relates_to=relates)  # type: ignore[arg-type]

        patient: str | None = None
        # The patient's denials depend only on the assertion: read them while the query runs.
        denials = _lookups().submit(self._denials.denied, normalised_patient(exchange.user.resource_id or ""))
        try:
            query = decode_query_request(request.body)
            patient = queried_patient(query.query)
            if patient is not None and not self.patient_known(patient):
                # The resource-id rule first: an unknown patient of another's assertion is a Fault.
                check_resource_id(exchange.user.resource_id, query.query)
                raise XdsUnknownPatientId(f"patient {patient} is not known to the registry", location=patient)
            result = run_stored_query(
                query, self._registry, resource_id=exchange.user.resource_id, policy=self._policy
            )
        except XdsError as exc:
            self._audit.stored_query(
                exchange,
                patients=[patient or exchange.user.resource_id or ""],
                outcome=Outcome.MINOR_FAILURE,
                description=f"{exc.code}: {exc}",
            )
            return answer(adhoc_query_response(None, errors=[exc]))
        denied = denials.result()
        visible = visible_part(result, caller, denied)
        shown = visible.result
        record_disclosure(
            self._log,
            chain=self._chain,
            caller=caller,
            transaction=ITI18,
            message_id=relates,
            items=disclosed_items(
                (*shown.documents, *shown.submission_sets, *shown.folders),
                study_of=lambda d: d.study_instance_uid,
            )
            or [DisclosedItem(exchange.user.resource_id or "-", None)],
        )
        self._audit.stored_query(
            exchange,
            patients=[
                patient or exchange.user.resource_id or "",
                *(d.patient_id for d in shown.documents),
                *(s.patient_id for s in shown.submission_sets),
                *(f.patient_id for f in shown.folders),
            ],
            outcome=Outcome.SUCCESS,
        )
        return answer(
            adhoc_query_response(shown, return_type=query.return_type, composed=query.return_composed_objects)
        )

    def patient_known(self, cx: str) -> bool:
        """A patient is known when the index holds the identity (images or HL7 put it there)."""
        return self._index.patient(access_log_key(cx)) is not None

    # --- ITI-42 ----------------------------------------------------------------------------

    def register(self, exchange: Exchange) -> HttpAnswer:
        caller = Caller.of(exchange.user)
        submission: Submission | None = None
        errors: list[XdsError] = []
        try:
            repository = self._access.repository(caller.org_oid)
            if repository is None:
                raise NotAuthorised(
                    f"organisation {caller.org_oid} is not registered as a document repository"
                )
            submission = decode_submission(
                exchange.request.body, controller=caller.org_oid, now=self._clock()
            )
            errors = self._check_submission(submission, repository.repository_unique_ids, repository.codes)
            if not errors:
                self._registry.register(
                    submission.documents,
                    submission.submission_set,
                    submission.folders,
                    submission.associations,
                    deprecate=submission.deprecate,
                )
        except NotAuthorised as exc:
            errors = [XdsRegistryError(str(exc))]
        except DuplicateUniqueId as exc:
            errors = [XdsDuplicateUniqueIdInRegistry(str(exc))]
        except RegistryConflict as exc:
            errors = [XdsRegistryError(str(exc))]
        self._audit.register(
            exchange,
            patient_cx=submission.patient_id if submission else exchange.user.resource_id or "",
            submission_set_uid=submission.submission_set.unique_id if submission else "",
            outcome=Outcome.MINOR_FAILURE if errors else Outcome.SUCCESS,
            description="; ".join(f"{e.code}: {e}" for e in errors) or None,
        )
        if not errors and submission is not None:
            LOG.info(
                "registered %d documents of %s for %s",
                len(submission.documents),
                caller.org_oid,
                submission.patient_id,
            )
        return soap_answer(
            registry_response(errors), action=ns.ACTION_ITI42_RESPONSE, relates_to=exchange.request.message_id
        )

    def _check_submission(
        self, submission: Submission, repository_ids: Iterable[str], codes: dict[str, tuple[str, ...]]
    ) -> list[XdsError]:
        errors: list[XdsError] = []
        patient = submission.patient_id
        if not self.patient_known(patient):
            errors.append(
                XdsUnknownPatientId(f"patient {patient} is not known to the registry", location=patient)
            )
        own = set(repository_ids)
        for document in submission.documents:
            if document.repository_unique_id not in own:
                errors.append(
                    XdsUnknownRepositoryId(
                        f"repositoryUniqueId {document.repository_unique_id} is not the caller's repository",
                        location=document.unique_id,
                    )
                )
            for attribute, values in _CODE_ATTRIBUTES.items():
                accepted = set(codes.get(attribute, ()))
                for code in values(document):
                    if f"{code.code}^{code.scheme}" not in accepted:
                        errors.append(
                            XdsRegistryMetadataError(
                                f"{attribute} {code.code}^{code.scheme} is not in the configured code set",
                                location=document.unique_id,
                            )
                        )
        content = submission.submission_set.content_type
        if f"{content.code}^{content.scheme}" not in set(codes.get("contentTypeCode", ())):
            errors.append(
                XdsRegistryMetadataError(
                    f"contentTypeCode {content.code}^{content.scheme} is not in the configured code set",
                    location=submission.submission_set.unique_id,
                )
            )
        targets = [
            a.target
            for a in submission.associations
            if a.target not in {d.entry_uuid for d in submission.documents}
        ]
        existing = {d.entry_uuid: d for d in self._registry.documents_by_uuid(targets)} if targets else {}
        for association in submission.associations:
            if (
                association.source in {d.entry_uuid for d in submission.documents}
                and association.type != association.type.HAS_MEMBER
            ):
                target = existing.get(association.target)
                if target is None:
                    errors.append(
                        XdsRegistryMetadataError(
                            f"{association.type.name} target {association.target} is not registered",
                            location=association.target,
                        )
                    )
                elif normalised_patient(target.patient_id) != normalised_patient(patient):
                    errors.append(
                        XdsPatientIdDoesNotMatch(
                            f"{association.type.name} target {association.target} is another patient's",
                            location=association.target,
                        )
                    )
        return errors

    # --- ITI-43 ----------------------------------------------------------------------------

    def retrieve(self, exchange: Exchange) -> HttpAnswer:
        caller = Caller.of(exchange.user)
        relates = exchange.request.message_id
        errors: list[XdsError] = []
        try:
            requests = decode_retrieve_request(exchange.request.body)
        except XdsError as exc:
            body = retrieve_response([], [exc])
            return soap_answer(body, action=ns.ACTION_ITI43_RESPONSE, relates_to=relates)
        own_repository = self._repository_unique_id()
        entries = {
            d.unique_id: d
            for d in self._registry.documents_by_unique_id([r.document_unique_id for r in requests])
        }
        resource = exchange.user.resource_id or ""
        denied = self._denials.denied(normalised_patient(resource))
        delivered: list[tuple[RetrievedDocument, DocumentEntry]] = []
        for index, request in enumerate(requests):
            entry = entries.get(request.document_unique_id)
            if request.repository_unique_id != own_repository:
                errors.append(
                    XdsUnknownRepositoryId(
                        f"repository {request.repository_unique_id} is not this archive",
                        location=request.repository_unique_id,
                    )
                )
            elif (
                entry is None
                or entry.repository_unique_id != own_repository
                or normalised_patient(entry.patient_id) != normalised_patient(resource)
                or not may_see(caller, controller=entry.controller, unique_id=entry.unique_id, denied=denied)
            ):
                # Unknown, another patient's or not disclosable: the same answer, nothing to tell apart.
                errors.append(
                    XdsDocumentUniqueIdError(
                        f"document {request.document_unique_id} is not available",
                        location=request.document_unique_id,
                    )
                )
            else:
                delivered.append(
                    (
                        RetrievedDocument(
                            own_repository,
                            entry.unique_id,
                            entry.mime_type,
                            new_content_id(index),
                            request.home_community_id,
                        ),
                        entry,
                    )
                )
        record_disclosure(
            self._log,
            chain=self._chain,
            caller=caller,
            transaction=ITI43,
            message_id=relates,
            items=disclosed_items([e for _, e in delivered], study_of=lambda d: d.study_instance_uid)
            or [DisclosedItem(resource or "-", None)],
        )
        documents: dict[str, list[str]] = {}
        for _, entry in delivered:
            documents.setdefault(entry.patient_id, []).append(entry.unique_id)
        self._audit.retrieve_documents(
            exchange,
            repository_unique_id=own_repository,
            documents=documents or {resource: []},
            outcome=Outcome.MINOR_FAILURE if errors else Outcome.SUCCESS,
            description="; ".join(f"{e.code}: {e}" for e in errors) or None,
        )
        body = retrieve_response([d for d, _ in delivered], errors)
        env = serialize(envelope(body, action=ns.ACTION_ITI43_RESPONSE, relates_to=relates))
        attachments = [
            Attachment(d.content_id, self._manifest_opener(d.document_unique_id)) for d, _ in delivered
        ]
        mtom = write_mtom(env, attachments, action=ns.ACTION_ITI43_RESPONSE)
        return HttpAnswer(200, mtom.content_type, b"".join(mtom.body))

    def _manifest_opener(self, unique_id: str) -> Callable[[], BinaryIO]:
        key = manifest_key(unique_id)
        return lambda: self._objects.get_stream(key)  # type: ignore[no-any-return]
