"""RAD-69 Retrieve Imaging Document Set: the Imaging Document Source streams the requested
instances as one MTOM answer, part by part, never holding the study.

The plan is made before a byte leaves: which instances exist, whose they are now (patient
identity after merges), who controls them and whether the caller may see them, and which transfer
syntax each goes out in (``choose_syntax`` decides from the stored syntax and the requested list,
as the DICOM retrieve does, without reading the object). The envelope lists every delivered
document and a RegistryError for each that cannot be given (unknown: XDSDocumentUniqueIdError; no
requested syntax possible: urn:dicom:wado:0007), the disclosure log is written, and then each part
is read from S3 through the retrieve service's read path (prefetching a few), converted, coerced to
the current patient identity and written to a spool file that the MTOM writer streams out in
256 KB blocks. Memory is bounded by (prefetch + 1) instances, whatever the study's size.

A decode failure discovered while streaming (a corrupt stored object) cannot be reported in the
envelope already sent; the stream is then cut, so the consumer sees an incomplete message rather
than a wrong one.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator
from typing import BinaryIO

from archive.audit.messages import Outcome
from archive.data.access_log import AccessLog
from archive.data.registration import RegistrationRepository
from archive.data.xds_access import DisclosureDenials
from archive.dicom.transcode import choose_syntax
from archive.errors import (
    ResourceIdMismatch,
    StorageFailure,
    TranscodingImpossible,
    WadoTransferSyntaxUnavailable,
    XdsDocumentUniqueIdError,
    XdsError,
    XdsRepositoryBusy,
    XdsUnknownRepositoryId,
)
from archive.model.xds_retrieve import RetrievedDocument
from archive.services.disclosure import (
    Caller,
    DisclosedItem,
    DisclosureLog,
    may_see,
    normalised_patient,
    record_disclosure,
)
from archive.services.query.retrieve import RetrieveItem, RetrieveService
from archive.services.storage_tiers import StorageTiers
from archive.services.xds_audit import XdsAudit
from archive.services.xds_exchange import Exchange, HttpAnswer, soap_answer
from archive.xds import ns
from archive.xds.mtom import Attachment, new_content_id, write_mtom
from archive.xds.retrieve import decode_imaging_request, retrieve_response
from archive.xds.soap import envelope, serialize

LOG = logging.getLogger("archive.xds.imaging")
RAD69 = "RAD-69"
DICOM = "application/dicom"


def patient_cx(item: RetrieveItem) -> str:
    return f"{item.patient.patient_id}^^^&{item.patient.issuer}&ISO"


class ImagingDocumentSource:
    def __init__(
        self,
        *,
        retrieve: RetrieveService,
        registrations: RegistrationRepository,
        denials: DisclosureDenials,
        log: AccessLog,
        chain: DisclosureLog | None = None,
        repository_unique_id: Callable[[], str],
        audit: XdsAudit | None = None,
        restores: StorageTiers | None = None,
    ) -> None:
        self._audit = audit or XdsAudit(None, archive_node="")
        self._restores = restores
        self._retrieve = retrieve
        self._registrations = registrations
        self._denials = denials
        self._log = log
        self._chain = chain
        self._repository_unique_id = repository_unique_id

    def retrieve_imaging(self, exchange: Exchange) -> HttpAnswer:
        caller = Caller.of(exchange.user)
        relates = exchange.request.message_id
        try:
            request = decode_imaging_request(exchange.request.body)
        except XdsError as exc:
            return soap_answer(
                retrieve_response([], [exc]), action=ns.ACTION_RAD69_RESPONSE, relates_to=relates
            )
        own = self._repository_unique_id()
        wanted = request.documents()
        found = {
            i.sop_instance_uid: i
            for i in self._retrieve.instances_to_send([d.document_unique_id for _, _, d in wanted])
        }
        resource = normalised_patient(exchange.user.resource_id or "")
        denied = self._denials.denied(resource)
        manifests: dict[str, str | None] = {}
        errors: list[XdsError] = []
        plan: list[tuple[RetrievedDocument, RetrieveItem, str]] = []
        nearline: list[RetrieveItem] = []
        accepted = set(request.transfer_syntaxes)
        for index, (study_uid, series_uid, document) in enumerate(wanted):
            item = found.get(document.document_unique_id)
            uid = document.document_unique_id
            if document.repository_unique_id != own:
                errors.append(
                    XdsUnknownRepositoryId(
                        f"repository {document.repository_unique_id} is not this archive", location=uid
                    )
                )
                continue
            if item is None or item.study_uid != study_uid or item.series_uid != series_uid:
                errors.append(XdsDocumentUniqueIdError(f"instance {uid} is not available", location=uid))
                continue
            if normalised_patient(patient_cx(item)) != resource:
                raise ResourceIdMismatch(
                    "an instance requested belongs to another patient than the resource-id"
                )
            if study_uid not in manifests:
                registration = self._registrations.get(study_uid)
                manifests[study_uid] = registration.manifest_uid if registration else None
            hidden_by = {study_uid, manifests[study_uid] or study_uid}
            if not may_see(
                caller, controller=item.controller_oid or "", unique_id=study_uid, denied=denied
            ) or (item.controller_oid != caller.org_oid and hidden_by & denied):
                errors.append(XdsDocumentUniqueIdError(f"instance {uid} is not available", location=uid))
                continue
            if item.nearline:
                # Not readable before a restore: reported below with the time to retry.
                nearline.append(item)
                continue
            try:
                target = choose_syntax(item.transfer_syntax_uid, lambda ts: ts in accepted)
            except TranscodingImpossible as exc:
                errors.append(WadoTransferSyntaxUnavailable(str(exc), location=uid))
                continue
            plan.append(
                (
                    RetrievedDocument(own, uid, DICOM, new_content_id(index), document.home_community_id),
                    item,
                    target,
                )
            )
        if nearline:
            comment = self._restore_for(nearline)
            errors += [
                XdsRepositoryBusy(f"instance {i.sop_instance_uid}: {comment}", location=i.sop_instance_uid)
                for i in nearline
            ]

        grouped: dict[tuple[str, str | None, str], DisclosedItem] = {}
        for _, item, _ in plan:
            key = (patient_cx(item), item.controller_oid, item.study_uid)
            grouped.setdefault(key, DisclosedItem(key[0], key[1], [], key[2])).identifiers.append(
                item.sop_instance_uid
            )
        record_disclosure(
            self._log,
            chain=self._chain,
            caller=caller,
            transaction=RAD69,
            message_id=relates,
            items=list(grouped.values()) or [DisclosedItem(resource, None)],
        )
        sent: dict[str, dict[str, dict[str, list[str]]]] = {}
        for _, item, _ in plan:
            sent.setdefault(patient_cx(item), {}).setdefault(item.study_uid, {}).setdefault(
                item.sop_class_uid, []
            ).append(item.sop_instance_uid)
        self._audit.retrieve_imaging(
            exchange,
            studies=sent or {resource: {}},
            outcome=Outcome.MINOR_FAILURE if errors else Outcome.SUCCESS,
            description="; ".join(f"{e.code}: {e}" for e in errors) or None,
        )
        body = retrieve_response([d for d, _, _ in plan], errors)
        env = serialize(envelope(body, action=ns.ACTION_RAD69_RESPONSE, relates_to=relates))
        mtom = write_mtom(env, self._attachments(plan, accepted), action=ns.ACTION_RAD69_RESPONSE)
        return HttpAnswer(200, mtom.content_type, mtom.body)

    def _restore_for(self, nearline: list[RetrieveItem]) -> str:
        """Start (or join) ONE restore per study of the NEARLINE instances (as C-MOVE and C-GET
        do); what to tell the requester. An XDS consumer has no AE title: nobody is sent an IAN."""
        if self._restores is None:
            return "NEARLINE: needs a restore (ask the archive operator)"
        try:
            ticket = self._restores.for_retrieval((i.study_uid for i in nearline), None)
        except Exception:
            LOG.exception("restore for a RAD-69 request not started")
            return "NEARLINE: restore could not be started; retry later"
        return ticket.retry_comment() if ticket else "NEARLINE: needs a restore (ask the archive operator)"

    def _attachments(
        self, plan: list[tuple[RetrievedDocument, RetrieveItem, str]], accepted: set[str]
    ) -> Iterator[Attachment]:
        # The same choice as the plan's: choose_syntax over the same requested list.
        prepared = self._retrieve.prepared(
            [item for _, item, _ in plan], lambda _sop_class, ts: ts in accepted
        )
        for document, _, _ in plan:

            def open_part(document: RetrievedDocument = document) -> BinaryIO:
                ready = next(prepared)
                if ready.error is not None or not ready.sendable:
                    raise StorageFailure(
                        f"instance {document.document_unique_id} failed while streaming: {ready.error}"
                    )
                if ready.path is not None:
                    # A large or converted object comes as a Part-10 spool file: stream it as it is;
                    # unlinked at once, it stays readable until the writer closes it.
                    part = open(ready.path, "rb")  # noqa: SIM115 - the writer closes it
                    ready.discard()
                    return part
                return io.BytesIO(ready.part10())

            yield Attachment(document.content_id, open_part, DICOM)
