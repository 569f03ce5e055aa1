"""The ATNA audit messages of the XDS transactions the archive answers (IHE ITI TF-2 3.18.5,
3.42.5, 3.43.5; RAD TF-3 4.69.4.1.4), through the same audit trail as the DICOM events.

Who asked is taken from the verified XUA assertion (ITI TF-2 3.40.4.2 and XUA++ 3.20.7.8):
- the requesting system as its organisation, ``urn:oid:<organization-id>`` with the organisation's
  name and the connection's address (UserIsRequestor, Source role for a query and an import,
  Destination role for an export);
- the human requestor, the assertion's subject NameID with ``UserName`` ``subject-id<NameID@issuer>``
  and the first XUA role as RoleIDCode;
- the purposes of use of the assertion in EventIdentification/PurposeOfUse.

The archive itself is the other participant (Destination of a query or import, Source of an
export), named by its audit source id. One message per patient (IHE: "one message per patient").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from lxml import etree

from archive.audit import messages as audit
from archive.model.xua import UserAssertion
from archive.services.audit import AuditTrail
from archive.services.disclosure import access_log_key
from archive.services.xds_exchange import Exchange
from archive.xds import ns


def purposes(user: UserAssertion) -> tuple[audit.Code, ...]:
    return tuple(audit.Code(p.code, p.scheme, p.display or p.code) for p in user.purposes_of_use)


def requesting_system(exchange: Exchange, role: audit.Code) -> audit.ActiveParticipant:
    user = exchange.user
    org = user.organization_id or "unknown"
    return audit.ActiveParticipant(
        org if org.startswith("urn:") else f"urn:oid:{org}",
        True,
        role,
        exchange.peer.address,
        user_name=user.organization,
    )


def human_requestor(user: UserAssertion) -> audit.ActiveParticipant:
    name_id = user.subject_name_id or user.subject_id or "unknown"
    role = (
        audit.Code(user.roles[0].code, user.roles[0].scheme, user.roles[0].display or user.roles[0].code)
        if user.roles
        else None
    )
    return audit.ActiveParticipant(
        name_id,
        True,
        role,
        user_name=f"{user.subject_id or ''}<{name_id}@{user.issuer}>",
    )


def patient_key(cx: str) -> str:
    """The audit builders' patient key (``ID^^^issuer``) of a CX in any namespace form."""
    return access_log_key(cx) if "^^^" in cx else cx


class XdsAudit:
    """Builds and records the audit message of each XDS transaction; without a trail, nothing."""

    def __init__(self, trail: AuditTrail | None, *, archive_node: str) -> None:
        self._trail = trail
        self._node = archive_node

    def _archive(self, role: audit.Code) -> audit.ActiveParticipant:
        return audit.ActiveParticipant(self._node, False, role)

    def stored_query(
        self,
        exchange: Exchange,
        *,
        patients: Iterable[str],
        outcome: audit.Outcome,
        description: str | None = None,
    ) -> None:
        """ITI-18 at the registry: 110112 Query, the AdhocQueryRequest in ParticipantObjectQuery."""
        if self._trail is None:
            return
        adhoc = exchange.request.body.find(ns.q(ns.RIM, "AdhocQuery"))
        query_id = adhoc.get("id") if adhoc is not None else None
        self._trail.record(
            audit.query(
                source=self._trail.source,
                outcome=outcome,
                requestor=requesting_system(exchange, audit.SOURCE_ROLE),
                responder=self._archive(audit.DESTINATION_ROLE),
                others=(human_requestor(exchange.user),),
                sop_class_uid=query_id or "unknown",
                query_bytes=etree.tostring(exchange.request.body),
                query_details=(("QueryEncoding", b"UTF-8"),),
                patient_keys=[patient_key(p) for p in patients if p],
                event_types=(audit.ITI_18,),
                purposes_of_use=purposes(exchange.user),
                outcome_description=description,
            )
        )

    def register(
        self,
        exchange: Exchange,
        *,
        patient_cx: str,
        submission_set_uid: str,
        outcome: audit.Outcome,
        description: str | None = None,
    ) -> None:
        """ITI-42 at the registry: 110107 Import, C, the patient and the submission set."""
        if self._trail is None:
            return
        self._trail.record(
            audit.disclosure(
                source=self._trail.source,
                event_id=audit.IMPORT,
                event_type=audit.ITI_42,
                action=audit.Action.CREATE,
                outcome=outcome,
                sender=requesting_system(exchange, audit.SOURCE_ROLE),
                recipient=self._archive(audit.DESTINATION_ROLE),
                others=(human_requestor(exchange.user),),
                patient_key=patient_key(patient_cx) if patient_cx else "-",
                objects=[
                    audit.ParticipantObject(submission_set_uid or "unknown", audit.SUBMISSION_SET, "2", "20")
                ],
                purposes_of_use=purposes(exchange.user),
                outcome_description=description,
            )
        )

    def retrieve_documents(
        self,
        exchange: Exchange,
        *,
        repository_unique_id: str,
        documents: Mapping[str, list[str]],
        outcome: audit.Outcome,
        description: str | None = None,
    ) -> None:
        """ITI-43 at the repository: 110106 Export, R, per patient (CX -> document uniqueIds)."""
        if self._trail is None:
            return
        for cx, unique_ids in documents.items():
            objects = [
                audit.ParticipantObject(
                    uid,
                    audit.REPORT_NUMBER,
                    "2",
                    "3",
                    details=(("Repository Unique Id", repository_unique_id.encode("ascii")),),
                )
                for uid in unique_ids
            ]
            self._export(exchange, audit.ITI_43, cx, objects, outcome, description)

    def retrieve_imaging(
        self,
        exchange: Exchange,
        *,
        studies: Mapping[str, Mapping[str, Mapping[str, list[str]]]],
        outcome: audit.Outcome,
        description: str | None = None,
    ) -> None:
        """RAD-69 at the imaging document source: 110106 Export, R, per patient: CX -> study UID ->
        SOP Class UID -> SOP Instance UIDs sent."""
        if self._trail is None:
            return
        for cx, by_study in studies.items():
            objects = [
                # Counts per SOP class, as the DICOM listener's 110104: bounded whatever the study's
                # size (the disclosure log names every instance).
                audit.study(study_uid, {sop_class: len(uids) for sop_class, uids in classes.items()})
                for study_uid, classes in by_study.items()
            ]
            self._export(exchange, audit.RAD_69, cx, objects, outcome, description)

    def _export(
        self,
        exchange: Exchange,
        event_type: audit.Code,
        cx: str,
        objects: list[audit.ParticipantObject],
        outcome: audit.Outcome,
        description: str | None,
    ) -> None:
        assert self._trail is not None
        self._trail.record(
            audit.disclosure(
                source=self._trail.source,
                event_id=audit.EXPORT,
                event_type=event_type,
                outcome=outcome,
                sender=self._archive(audit.SOURCE_ROLE),
                recipient=requesting_system(exchange, audit.DESTINATION_ROLE),
                others=(human_requestor(exchange.user),),
                patient_key=patient_key(cx) if cx else "-",
                objects=objects,
                purposes_of_use=purposes(exchange.user),
                outcome_description=description,
            )
        )
