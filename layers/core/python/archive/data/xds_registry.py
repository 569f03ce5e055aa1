"""The XDS registry in DynamoDB: document entries, submission sets, folders and associations.

One table (``XdsRegistryItem``), four item shapes, so that every ITI-18 stored query is a key or
index lookup, never a scan:

- ``O#<entryUUID>``: the object itself (kind, status, body); GetDocuments/GetSubmissionSets/
  GetFolders by entryUUID are a BatchGetItem. Documents, submission sets and folders carry
  ``patient_kind`` = ``<patient CX>#<kind>`` and ``status_time`` = ``<status>#<UTC time>`` for the
  sparse ``by_patient`` index: FindDocuments is one Query per status, a creation-time range a
  condition on the sort key.
- ``U#<kind>#<uniqueId>``: the uniqueId guard, written with the object and conditioned not to
  exist, so a uniqueId is registered once; lookups by uniqueId are a BatchGetItem of the guards.
- ``R#<patient CX>#<CXi>`` / ``<entryUUID>``: each referenceIdList value of a document
  (FindDocumentsByReferenceId: one Query per value).
- ``A#<entryUUID>`` / ``<association entryUUID>``: each association under both its ends
  (GetAssociations, GetRelatedDocuments: one Query per entryUUID).
- ``S#<Study Instance UID>`` / ``<entryUUID>``: each document that names a study (a manifest, or any
  entry with a Study Instance UID referenceIdList value), whatever patient ID it was registered
  under: the destruction job finds a study's entries here also after an HL7 merge (one Query).

Deprecating a replaced entry changes its ``status`` and ``status_time`` in the same transaction,
conditioned on it being Approved, so two replacements of one entry cannot both succeed.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable, Sequence
from datetime import datetime
from enum import Enum
from typing import Any, TypeVar

from pynamodb.exceptions import TransactWriteError
from pynamodb.transactions import TransactWrite

from archive.config import Settings
from archive.data.models import TransactionConnection, XdsRegistryItem
from archive.errors import DuplicateUniqueId, RegistryConflict
from archive.model.registration import STUDY_UID_REFERENCE
from archive.model.xds import (
    Association,
    AssociationType,
    DocumentEntry,
    EntryStatus,
    Folder,
    SubmissionSet,
)

DOCUMENT = "DocumentEntry"
SUBMISSION_SET = "SubmissionSet"
FOLDER = "Folder"
ASSOCIATION = "Association"
OBJECT_SK = "O"
UNIQUE_SK = "U"
# DynamoDB's limit on the items of one TransactWriteItems call.
MAX_TRANSACTION_ITEMS = 100

T = TypeVar("T")
RegistryObject = DocumentEntry | SubmissionSet | Folder | Association


def object_pk(entry_uuid: str) -> str:
    return f"O#{entry_uuid}"


def unique_pk(kind: str, unique_id: str) -> str:
    return f"U#{kind}#{unique_id}"


def reference_pk(patient_id: str, reference_id: str) -> str:
    return f"R#{patient_id}#{reference_id}"


def association_pk(entry_uuid: str) -> str:
    return f"A#{entry_uuid}"


def study_pk(study_uid: str) -> str:
    return f"S#{study_uid}"


def studies_named(document: DocumentEntry) -> list[str]:
    """The Study Instance UIDs a document names: its manifest's study and its study references."""
    suffix = f"^^^^{STUDY_UID_REFERENCE}"
    found = [document.study_instance_uid] if document.study_instance_uid else []
    found += [r[: -len(suffix)] for r in document.reference_ids if r.endswith(suffix)]
    return list(dict.fromkeys(u for u in found if u))


def _status_name(status: EntryStatus | str) -> str:
    return str(status).rsplit(":", 1)[-1]


# --- values <-> JSON ------------------------------------------------------------------------------


def to_json(value: Any) -> Any:
    """A registry value as JSON-able data (datetimes as ISO text, enums by value, tuples as lists)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (tuple, list)):
        return [to_json(v) for v in value]
    return value


def _decode(tp: Any, raw: Any) -> Any:
    if raw is None:
        return None
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return _decode(inner[0], raw)
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_decode(args[0], v) for v in raw)
        return tuple(_decode(a, v) for a, v in zip(args, raw, strict=True))
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return from_json(tp, raw)
    if isinstance(tp, type) and issubclass(tp, Enum):
        return tp(raw)
    if tp is datetime:
        return datetime.fromisoformat(raw)
    return raw


def from_json(cls: type[T], data: dict[str, Any]) -> T:
    """The registry value of type ``cls`` from ``to_json`` output (unknown keys ignored)."""
    hints = typing.get_type_hints(cls)
    kwargs = {
        f.name: _decode(hints[f.name], data[f.name])
        for f in dataclasses.fields(cls)  # type: ignore[arg-type]
        if f.name in data
    }
    return cls(**kwargs)


# --- the repository -------------------------------------------------------------------------------


@dataclasses.dataclass
class _Write:
    item: XdsRegistryItem
    condition: Any = None
    update: list[Any] | None = None  # an update (actions) instead of a put
    guard: str | None = None  # what a failed condition means: "unique" | "deprecate"


class XdsRegistry(TransactionConnection):
    """Reads return model values; every read is a GetItem/BatchGetItem or a Query on a key or index."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    # --- reads ---------------------------------------------------------------------------------

    def _by_patient(
        self, kind: str, cls: type[T], patient_id: str, statuses: Iterable[EntryStatus]
    ) -> list[T]:
        out: list[T] = []
        for status in dict.fromkeys(statuses):
            for item in XdsRegistryItem.by_patient.query(
                f"{patient_id}#{kind}", XdsRegistryItem.status_time.startswith(f"{_status_name(status)}#")
            ):
                out.append(self._value(cls, item))
        return out

    def _objects(self, kind: str, cls: type[T], uuids: Iterable[str]) -> list[T]:
        keys = [(object_pk(u), OBJECT_SK) for u in dict.fromkeys(uuids)]
        if not keys:
            return []
        items = {i.entry_uuid: i for i in XdsRegistryItem.batch_get(keys, consistent_read=True)}
        return [
            self._value(cls, items[u]) for u in dict.fromkeys(uuids) if u in items and items[u].kind == kind
        ]

    def _by_unique(self, kind: str, cls: type[T], unique_ids: Iterable[str]) -> list[T]:
        keys = [(unique_pk(kind, u), UNIQUE_SK) for u in dict.fromkeys(unique_ids)]
        if not keys:
            return []
        uuids = [g.entry_uuid for g in XdsRegistryItem.batch_get(keys, consistent_read=True) if g.entry_uuid]
        return self._objects(kind, cls, uuids)

    @staticmethod
    def _value(cls: type[T], item: XdsRegistryItem) -> T:
        data = dict(item.body or {})
        if item.status:
            data["status"] = item.status  # the status attribute is the truth (deprecation updates it)
        return from_json(cls, data)

    def documents_by_patient(self, patient_id: str, statuses: Iterable[EntryStatus]) -> list[DocumentEntry]:
        return self._by_patient(DOCUMENT, DocumentEntry, patient_id, statuses)

    def documents_by_uuid(self, uuids: Iterable[str]) -> list[DocumentEntry]:
        return self._objects(DOCUMENT, DocumentEntry, uuids)

    def documents_by_unique_id(self, unique_ids: Iterable[str]) -> list[DocumentEntry]:
        return self._by_unique(DOCUMENT, DocumentEntry, unique_ids)

    def documents_by_reference_id(self, patient_id: str, reference_ids: Iterable[str]) -> list[DocumentEntry]:
        uuids: list[str] = []
        for reference in dict.fromkeys(reference_ids):
            uuids += [i.sk for i in XdsRegistryItem.query(reference_pk(patient_id, reference))]
        return self._objects(DOCUMENT, DocumentEntry, uuids)

    def submission_sets_by_patient(
        self, patient_id: str, statuses: Iterable[EntryStatus]
    ) -> list[SubmissionSet]:
        return self._by_patient(SUBMISSION_SET, SubmissionSet, patient_id, statuses)

    def submission_sets_by_uuid(self, uuids: Iterable[str]) -> list[SubmissionSet]:
        return self._objects(SUBMISSION_SET, SubmissionSet, uuids)

    def submission_sets_by_unique_id(self, unique_ids: Iterable[str]) -> list[SubmissionSet]:
        return self._by_unique(SUBMISSION_SET, SubmissionSet, unique_ids)

    def folders_by_patient(self, patient_id: str, statuses: Iterable[EntryStatus]) -> list[Folder]:
        return self._by_patient(FOLDER, Folder, patient_id, statuses)

    def folders_by_uuid(self, uuids: Iterable[str]) -> list[Folder]:
        return self._objects(FOLDER, Folder, uuids)

    def folders_by_unique_id(self, unique_ids: Iterable[str]) -> list[Folder]:
        return self._by_unique(FOLDER, Folder, unique_ids)

    def associations_of(self, uuids: Iterable[str]) -> list[Association]:
        """Every association whose source or target is one of ``uuids``."""
        found: dict[str, Association] = {}
        for uuid in dict.fromkeys(uuids):
            for item in XdsRegistryItem.query(association_pk(uuid)):
                found.setdefault(item.sk, self._value(Association, item))
        return list(found.values())

    # --- the one write ---------------------------------------------------------------------------

    def register(
        self,
        documents: Sequence[DocumentEntry],
        submission_set: SubmissionSet,
        folders: Sequence[Folder] = (),
        associations: Sequence[Association] = (),
        *,
        deprecate: Sequence[str] = (),
    ) -> None:
        """Write a whole submission and mark the entries in ``deprecate`` Deprecated.

        One transaction when it fits DynamoDB's 100 items (a manifest submission takes about ten).
        A larger one is written in chunks: the first carries every uniqueId guard and deprecation,
        so conflicts are found before anything is written; a later chunk that fails has the chunks
        before it deleted again. Raises DuplicateUniqueId or RegistryConflict.
        """
        writes = self._submission_writes(documents, submission_set, folders, associations)
        guards = sum(1 for w in writes if w.guard == "unique")
        writes[guards:guards] = [self._deprecation(uuid) for uuid in deprecate]
        chunks = [writes[i : i + MAX_TRANSACTION_ITEMS] for i in range(0, len(writes), MAX_TRANSACTION_ITEMS)]
        done: list[_Write] = []
        for chunk in chunks:
            try:
                self._transact(chunk)
            except (DuplicateUniqueId, RegistryConflict):
                self._undo(done)
                raise
            done += chunk

    @classmethod
    def submission_items(
        cls,
        documents: Sequence[DocumentEntry],
        submission_set: SubmissionSet,
        folders: Sequence[Folder] = (),
        associations: Sequence[Association] = (),
    ) -> list[XdsRegistryItem]:
        """The items ``register`` writes for a new submission (no deprecations), unconditioned:
        for bulk loading a registry whose uniqueIds are known to be new (the benchmark's corpus)."""
        return [w.item for w in cls._submission_writes(documents, submission_set, folders, associations)]

    @classmethod
    def _submission_writes(
        cls,
        documents: Sequence[DocumentEntry],
        submission_set: SubmissionSet,
        folders: Sequence[Folder],
        associations: Sequence[Association],
    ) -> list[_Write]:
        """The uniqueId guards first, then the objects and their reference/association items."""
        writes: list[_Write] = []
        objects: list[_Write] = []
        for document in documents:
            writes.append(cls._guard(DOCUMENT, document.unique_id, document.entry_uuid))
            objects.append(cls._object(DOCUMENT, document, document.patient_id, document.creation_time))
            for reference in document.reference_ids:
                objects.append(
                    _Write(
                        XdsRegistryItem(
                            reference_pk(document.patient_id, reference),
                            document.entry_uuid,
                            kind="Reference",
                            entry_uuid=document.entry_uuid,
                        )
                    )
                )
            for study_uid in studies_named(document):
                objects.append(
                    _Write(
                        XdsRegistryItem(
                            study_pk(study_uid),
                            document.entry_uuid,
                            kind="Study",
                            entry_uuid=document.entry_uuid,
                        )
                    )
                )
        writes.append(cls._guard(SUBMISSION_SET, submission_set.unique_id, submission_set.entry_uuid))
        objects.append(
            cls._object(
                SUBMISSION_SET, submission_set, submission_set.patient_id, submission_set.submission_time
            )
        )
        for folder in folders:
            writes.append(cls._guard(FOLDER, folder.unique_id, folder.entry_uuid))
            objects.append(cls._object(FOLDER, folder, folder.patient_id, folder.last_update_time))
        for association in associations:
            objects.append(cls._object(ASSOCIATION, association, None, None))
            for end in dict.fromkeys((association.source, association.target)):
                objects.append(
                    _Write(
                        XdsRegistryItem(
                            association_pk(end),
                            association.entry_uuid,
                            kind=ASSOCIATION,
                            entry_uuid=association.entry_uuid,
                            status=str(association.status),
                            body=to_json(association),
                        )
                    )
                )
        return [*writes, *objects]

    def deprecate(self, entry_uuids: Sequence[str]) -> None:
        """Mark Approved entries Deprecated without a replacement (IOCM: every instance of the
        study is rejected). Entries Deprecated already are left as they are, so a rerun is a no-op;
        RegistryConflict when one is not registered."""
        current = {d.entry_uuid: d.status for d in self.documents_by_uuid(entry_uuids)}
        missing = [u for u in entry_uuids if u not in current]
        if missing:
            raise RegistryConflict(f"entries to deprecate are not registered: {', '.join(missing)}")
        approved = [u for u in dict.fromkeys(entry_uuids) if current[u] is EntryStatus.APPROVED]
        for start in range(0, len(approved), MAX_TRANSACTION_ITEMS):
            self._transact([self._deprecation(u) for u in approved[start : start + MAX_TRANSACTION_ITEMS]])

    def study_documents(self, study_uid: str, patient_id: str | None = None) -> list[DocumentEntry]:
        """Every DocumentEntry (any status) that names the study, under whichever patient ID it was
        registered (the study index), and, for entries registered before that index existed, by its
        Study Instance UID reference under ``patient_id``."""
        uuids = [i.sk for i in XdsRegistryItem.query(study_pk(study_uid), consistent_read=True)]
        found = self._objects(DOCUMENT, DocumentEntry, uuids)
        if patient_id:
            known = {d.entry_uuid for d in found}
            reference = f"{study_uid}^^^^{STUDY_UID_REFERENCE}"
            found += [
                d
                for d in self.documents_by_reference_id(patient_id, [reference])
                if d.entry_uuid not in known
            ]
        return found

    def remove_documents(self, entry_uuids: Sequence[str]) -> int:
        """Delete DocumentEntries from the registry for good (a destroyed study's, after the
        policy's delay): each entry, its uniqueId guard and reference items, its associations and
        the submission sets that held only it. The entry itself goes last, so a rerun after a stop
        finds it and finishes. Returns how many entries were removed."""
        removed = 0
        for uuid in dict.fromkeys(entry_uuids):
            try:
                item = XdsRegistryItem.get(object_pk(uuid), OBJECT_SK, consistent_read=True)
            except XdsRegistryItem.DoesNotExist:
                continue
            document = self._value(DocumentEntry, item)
            XdsRegistryItem(unique_pk(DOCUMENT, document.unique_id), UNIQUE_SK).delete()
            for reference in document.reference_ids:
                XdsRegistryItem(reference_pk(document.patient_id, reference), uuid).delete()
            for study_uid in studies_named(document):
                XdsRegistryItem(study_pk(study_uid), uuid).delete()
            for association in self.associations_of([uuid]):
                if association.type is AssociationType.HAS_MEMBER and association.target == uuid:
                    self._remove_submission_set(association.source)
                self._remove_association(association)
            XdsRegistryItem(object_pk(uuid), OBJECT_SK).delete()
            removed += 1
        return removed

    def _remove_association(self, association: Association) -> None:
        for end in dict.fromkeys((association.source, association.target)):
            XdsRegistryItem(association_pk(end), association.entry_uuid).delete()
        XdsRegistryItem(object_pk(association.entry_uuid), OBJECT_SK).delete()

    def _remove_submission_set(self, entry_uuid: str) -> None:
        found = self.submission_sets_by_uuid([entry_uuid])
        if not found:
            return
        members = [a for a in self.associations_of([entry_uuid]) if a.source == entry_uuid]
        if len(members) > 1:
            return  # it holds other documents too: it stays
        XdsRegistryItem(unique_pk(SUBMISSION_SET, found[0].unique_id), UNIQUE_SK).delete()
        XdsRegistryItem(object_pk(entry_uuid), OBJECT_SK).delete()

    @staticmethod
    def _guard(kind: str, unique_id: str, entry_uuid: str) -> _Write:
        return _Write(
            XdsRegistryItem(unique_pk(kind, unique_id), UNIQUE_SK, kind=kind, entry_uuid=entry_uuid),
            condition=XdsRegistryItem.pk.does_not_exist(),
            guard="unique",
        )

    def _deprecation(self, entry_uuid: str) -> _Write:
        item = XdsRegistryItem(object_pk(entry_uuid), OBJECT_SK)
        return _Write(
            item,
            condition=XdsRegistryItem.status == str(EntryStatus.APPROVED),
            update=[],  # filled in _transact: the new status_time needs the stored time
            guard="deprecate",
        )

    @staticmethod
    def _object(kind: str, value: RegistryObject, patient_id: str | None, time: datetime | None) -> _Write:
        status = str(value.status)
        item = XdsRegistryItem(
            object_pk(value.entry_uuid),
            OBJECT_SK,
            kind=kind,
            entry_uuid=value.entry_uuid,
            status=status,
            body=to_json(value),
        )
        if patient_id is not None and time is not None:
            item.patient_kind = f"{patient_id}#{kind}"
            item.status_time = f"{_status_name(status)}#{time.isoformat()}"
        return _Write(item, condition=XdsRegistryItem.pk.does_not_exist())

    def _transact(self, chunk: Sequence[_Write]) -> None:
        deprecations = [w for w in chunk if w.guard == "deprecate"]
        stored = {}
        if deprecations:
            keys = [(w.item.pk, w.item.sk) for w in deprecations]
            stored = {i.pk: i for i in XdsRegistryItem.batch_get(keys, consistent_read=True)}
        try:
            with TransactWrite(connection=self._connection()) as tx:
                for write in chunk:
                    if write.guard == "deprecate":
                        current = stored.get(write.item.pk)
                        if current is None:
                            raise RegistryConflict(
                                f"entry to deprecate {write.item.pk[2:]} is not registered"
                            )
                        actions: list[Any] = [XdsRegistryItem.status.set(str(EntryStatus.DEPRECATED))]
                        if current.status_time:
                            time = current.status_time.split("#", 1)[1]
                            actions.append(
                                XdsRegistryItem.status_time.set(
                                    f"{_status_name(EntryStatus.DEPRECATED)}#{time}"
                                )
                            )
                        tx.update(write.item, actions=actions, condition=write.condition)
                    else:
                        tx.save(write.item, condition=write.condition)
        except TransactWriteError as exc:
            reasons = [getattr(r, "code", None) for r in (exc.cancellation_reasons or [])]
            failed = [w for w, r in zip(chunk, reasons, strict=False) if r == "ConditionalCheckFailed"]
            if any(w.guard == "unique" for w in failed):
                raise DuplicateUniqueId(
                    "uniqueId registered already: "
                    + ", ".join(w.item.pk.split("#", 2)[2] for w in failed if w.guard == "unique")
                ) from exc
            if failed:
                raise RegistryConflict(
                    "registry changed concurrently: " + ", ".join(w.item.pk for w in failed)
                ) from exc
            raise

    @staticmethod
    def _undo(done: Sequence[_Write]) -> None:
        for write in reversed(done):
            if write.guard == "deprecate":
                actions: list[Any] = [XdsRegistryItem.status.set(str(EntryStatus.APPROVED))]
                current = XdsRegistryItem.get(write.item.pk, write.item.sk, consistent_read=True)
                if current.status_time:
                    time = current.status_time.split("#", 1)[1]
                    actions.append(
                        XdsRegistryItem.status_time.set(f"{_status_name(EntryStatus.APPROVED)}#{time}")
                    )
                XdsRegistryItem(write.item.pk, write.item.sk).update(actions=actions)
            else:
                write.item.delete()
