"""Audit messages of the DICOM listener (DICOM PS3.15 A.5.3), built from what the handlers saw.

- C-STORE: one 110104 Instances Transferred (action C) per patient and study of an association,
  sent when the association ends (SOP classes and instance counts, as A.5.3.4 wants); refusals as
  one 110104 with outcome 4 and the statuses.
- C-FIND: 110112 Query with the identifier as received (base64), its transfer syntax, and the
  patients the answers named.
- C-MOVE / C-GET: 110104 (action R) per patient and study sent, with the requestor, the archive as
  source and the destination (the move destination, or the requestor for C-GET).
"""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from archive.audit import messages as audit
from archive.data.access_log import Disclosed
from archive.services.audit import AuditTrail


def _address(assoc: Any) -> str | None:
    info = getattr(assoc.requestor, "address", None)
    return str(info) if info else None


@dataclass
class _Stored:
    calling_ae: str
    address: str | None
    studies: dict[tuple[str, str], Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    refused: Counter[str] = field(default_factory=Counter)


class DicomAudit:
    def __init__(self, trail: AuditTrail, archive_ae_title: str) -> None:
        self._trail = trail
        self._archive = archive_ae_title
        self._lock = threading.Lock()
        self._stored: dict[int, _Stored] = {}

    def _me(self, *, requestor: bool = False, role: audit.Code | None = None) -> audit.ActiveParticipant:
        return audit.ActiveParticipant(self._archive, requestor, role)

    # --- C-STORE ---------------------------------------------------------------------------

    def _state(self, assoc: Any, calling_ae: str) -> _Stored:
        with self._lock:
            return self._stored.setdefault(id(assoc), _Stored(calling_ae, _address(assoc)))

    def stored(
        self, assoc: Any, calling_ae: str, patient_key: str, study_uid: str, sop_class_uid: str
    ) -> None:
        self._state(assoc, calling_ae).studies[(patient_key, study_uid)][sop_class_uid] += 1

    def store_refused(self, assoc: Any, calling_ae: str, status: int) -> None:
        self._state(assoc, calling_ae).refused[f"0x{status:04X}"] += 1

    def association_ended(self, assoc: Any) -> None:
        with self._lock:
            state = self._stored.pop(id(assoc), None)
        if state is None:
            return
        sender = audit.ActiveParticipant(state.calling_ae, True, audit.SOURCE_ROLE, state.address)
        receiver = self._me(role=audit.DESTINATION_ROLE)
        for (patient_key, study_uid), counts in state.studies.items():
            self._trail.record(
                audit.instances_transferred(
                    source=self._trail.source,
                    action=audit.Action.CREATE,
                    outcome=audit.Outcome.SUCCESS,
                    sender=sender,
                    receiver=receiver,
                    patient_key=patient_key,
                    studies=[audit.study(study_uid, dict(counts))],
                )
            )
        if state.refused:
            self._trail.record(
                audit.AuditMessage(
                    audit.INSTANCES_TRANSFERRED,
                    audit.Action.CREATE,
                    audit.Outcome.MINOR_FAILURE,
                    (sender, receiver),
                    self._trail.source,
                    outcome_description="C-STORE refused: "
                    + ", ".join(f"{n} x {status}" for status, n in sorted(state.refused.items())),
                )
            )

    # --- Query/Retrieve --------------------------------------------------------------------

    def queried(
        self,
        event: Any,
        calling_ae: str,
        disclosed: list[Disclosed],
        outcome: str,
    ) -> None:
        getvalue = getattr(getattr(event.request, "Identifier", None), "getvalue", None)
        raw = getvalue() if callable(getvalue) else b""
        success = outcome == "COMPLETED"
        self._trail.record(
            audit.query(
                source=self._trail.source,
                outcome=audit.Outcome.SUCCESS if success else audit.Outcome.MINOR_FAILURE,
                requestor=audit.ActiveParticipant(calling_ae, True, audit.SOURCE_ROLE, _address(event.assoc)),
                responder=self._me(role=audit.DESTINATION_ROLE),
                sop_class_uid=str(event.context.abstract_syntax),
                query_bytes=raw,
                transfer_syntax=str(event.context.transfer_syntax),
                patient_keys=[d.patient_key for d in disclosed if d.patient_key != "-"],
                outcome_description=None if success else outcome,
            )
        )

    def retrieved(
        self,
        event: Any,
        operation: str,
        calling_ae: str,
        destination_ae: str | None,
        disclosed: list[Disclosed],
        outcome: str,
        sop_classes: dict[str, str],
    ) -> None:
        """One 110104 (R) per patient-study sent; ``sop_classes`` maps SOP Instance UID -> class."""
        success = outcome.startswith("COMPLETED")
        requestor = audit.ActiveParticipant(calling_ae, True, None, _address(event.assoc))
        if operation == "C-GET":
            receiver = audit.ActiveParticipant(
                calling_ae, True, audit.DESTINATION_ROLE, _address(event.assoc)
            )
            extra = None
        else:
            receiver = audit.ActiveParticipant(destination_ae or "unknown", False, audit.DESTINATION_ROLE)
            extra = requestor
        grouped: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
        for item in disclosed:
            for uid in item.sop_instance_uids:
                grouped[(item.patient_key, item.study_uid or "")][sop_classes.get(uid, "")] += 1
        if not grouped and not success:
            grouped[("-", "")] = Counter()
        for (patient_key, study_uid), counts in grouped.items():
            self._trail.record(
                audit.instances_transferred(
                    source=self._trail.source,
                    action=audit.Action.READ,
                    outcome=audit.Outcome.SUCCESS if success else audit.Outcome.MINOR_FAILURE,
                    sender=self._me(role=audit.SOURCE_ROLE),
                    receiver=receiver,
                    requestor=extra,
                    patient_key=patient_key,
                    studies=[audit.study(study_uid, {k: v for k, v in counts.items() if k})]
                    if study_uid
                    else [],
                    outcome_description=None if success else f"{operation}: {outcome}",
                )
            )
