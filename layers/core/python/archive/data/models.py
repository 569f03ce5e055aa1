"""DynamoDB tables of the archive, as pynamodb models.

These classes are the single definition of every table: the CDK construct and the local cloud both
derive key schemas and secondary indexes from them (see ``archive.data.schema``), so the deployed
tables and the local ones cannot drift. Table names and endpoints are bound once at start-up by
``bind_models`` from ``Settings``, never at import time.
"""

from __future__ import annotations

from typing import Any

from pynamodb.attributes import (
    BooleanAttribute,
    JSONAttribute,
    ListAttribute,
    NumberAttribute,
    UnicodeAttribute,
    UnicodeSetAttribute,
    UTCDateTimeAttribute,
)
from pynamodb.connection import Connection
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex, KeysOnlyProjection
from pynamodb.models import Model

from archive.config import Settings


def conditional_check_failed(exc: Exception) -> bool:
    """Whether a pynamodb write failed on its condition (and not on anything else)."""
    return getattr(exc, "cause_response_code", None) == "ConditionalCheckFailedException"


class TransactionConnection:
    """One pynamodb Connection (one botocore client) for a repository's transactions, made on first
    use: creating a client costs 0.1-0.6 s, which made every transaction that slow (the local HL7
    drain went from about 1 to 5-6 messages a second with this cache; docs/conformance-hl7.md).
    The repository sets ``self._settings``."""

    _settings: Settings
    _tx_connection: Connection | None = None

    def _connection(self) -> Connection:
        if self._tx_connection is None:
            self._tx_connection = Connection(region=self._settings.region, host=self._settings.endpoint_url)
        return self._tx_connection


class _Unbound:
    """Placeholder Meta: using a model before ``bind_models`` fails loudly."""

    table_name = "unbound"
    region = "eu-north-1"
    billing_mode = "PAY_PER_REQUEST"


# --- configuration registry -------------------------------------------------------------------


class Organisation(Model):
    """A customer organisation (controller of its patients' data), identified by its OID."""

    class Meta(_Unbound):
        logical_name = "organisations"

    oid = UnicodeAttribute(hash_key=True)
    name = UnicodeAttribute()
    trusted_issuers = ListAttribute(of=UnicodeAttribute, default=list)
    default_issuer = UnicodeAttribute(null=True)
    created_at = UTCDateTimeAttribute()
    # Certificate names (``CN=...``, ``DNS:...``) that identify the organisation when its
    # certificates carry no ``urn:oid`` of it (see archive.model.certificates).
    certificate_names = ListAttribute(of=UnicodeAttribute, default=list)


class AEByOrganisation(GlobalSecondaryIndex["ApplicationEntity"]):
    class Meta:
        index_name = "by_organisation"
        projection = AllProjection()

    org_oid = UnicodeAttribute(hash_key=True)


class ApplicationEntity(Model):
    """A DICOM node of an organisation: who may call the archive and where the archive calls back."""

    class Meta(_Unbound):
        logical_name = "application_entities"

    ae_title = UnicodeAttribute(hash_key=True)
    org_oid = UnicodeAttribute()
    host = UnicodeAttribute()
    port = NumberAttribute()
    tls = BooleanAttribute(default=False)
    roles = ListAttribute(of=UnicodeAttribute, default=list)
    description = UnicodeAttribute(null=True)
    # Networks (CIDR) associations from this AE may come from; see archive.registry.AEInfo.
    addresses = ListAttribute(of=UnicodeAttribute, default=list)
    # If set, the calling node's certificate must carry one of these names (not just the org's).
    certificate_names = ListAttribute(of=UnicodeAttribute, default=list)
    by_organisation = AEByOrganisation()


# --- index ------------------------------------------------------------------------------------


class PatientsById(GlobalSecondaryIndex["Patient"]):
    class Meta:
        index_name = "by_patient_id"
        projection = AllProjection()

    patient_id = UnicodeAttribute(hash_key=True)


class PatientsByMergedInto(GlobalSecondaryIndex["Patient"]):
    """Sparse: identities merged into a survivor, so a query for it also finds their studies."""

    class Meta:
        index_name = "by_merged_into"
        projection = KeysOnlyProjection()

    merged_into = UnicodeAttribute(hash_key=True)


class Patient(Model):
    """A patient identity: Patient ID qualified by its issuer (assigning authority)."""

    class Meta(_Unbound):
        logical_name = "patients"

    patient_key = UnicodeAttribute(hash_key=True)
    patient_id = UnicodeAttribute()
    issuer = UnicodeAttribute()
    patient_name = UnicodeAttribute(null=True)
    birth_date = UnicodeAttribute(null=True)
    sex = UnicodeAttribute(null=True)
    # YYYYMMDD: the patient's death, from HL7 PID-29 or an operator (docs/retention.md).
    death_date = UnicodeAttribute(null=True)
    org_oid = UnicodeAttribute(null=True)
    # Set when this identity was merged into another one (HL7 A40); the survivor's key.
    merged_into = UnicodeAttribute(null=True)
    updated_at = UTCDateTimeAttribute(null=True)
    # DICOM Specific Character Set that retrieval must declare for ``patient_name`` when it was set
    # from HL7 (ISO_IR 100 for MSH-18 8859/1, ISO_IR 192 for UNICODE UTF-8); None for plain ASCII.
    name_charset = UnicodeAttribute(null=True)
    merged_at = UTCDateTimeAttribute(null=True)
    by_patient_id = PatientsById()
    by_merged_into = PatientsByMergedInto()


class StudiesByPatient(GlobalSecondaryIndex["Study"]):
    class Meta:
        index_name = "by_patient"
        projection = AllProjection()

    patient_key = UnicodeAttribute(hash_key=True)
    study_date = UnicodeAttribute(range_key=True)


class StudiesByAccession(GlobalSecondaryIndex["Study"]):
    class Meta:
        index_name = "by_accession"
        projection = AllProjection()

    accession_number = UnicodeAttribute(hash_key=True)


class StudiesByOrganisationDate(GlobalSecondaryIndex["Study"]):
    """An organisation's studies by date ("today's studies"): the C-FIND StudyDate lookup.

    Keys only: the index entry is written once (when the study gets its organisation and date),
    not on every instance that updates the study's counters; the studies are then read in batches.
    """

    class Meta:
        index_name = "by_org_date"
        projection = KeysOnlyProjection()

    org_oid = UnicodeAttribute(hash_key=True)
    study_date = UnicodeAttribute(range_key=True)


class StudiesByRetentionEnd(GlobalSecondaryIndex["Study"]):
    """Sparse and sharded: studies with a known retention end, by that end. The destruction job
    queries each shard for ends up to now, so its cost follows the due studies, not the archive."""

    class Meta:
        index_name = "by_retention_end"
        projection = KeysOnlyProjection()

    retention_shard = UnicodeAttribute(hash_key=True)
    retention_end = UnicodeAttribute(range_key=True)


class Study(Model):
    """A study with the aggregates C-FIND and XDS answer from (modalities, counts, last update)."""

    class Meta(_Unbound):
        logical_name = "studies"

    study_uid = UnicodeAttribute(hash_key=True)
    # Claimed by the DICOM listener with the first instance (so a second patient is refused, A778).
    patient_key = UnicodeAttribute(null=True)
    org_oid = UnicodeAttribute(null=True)
    patient_id = UnicodeAttribute(null=True)
    issuer = UnicodeAttribute(null=True)
    patient_name = UnicodeAttribute(null=True)
    patient_birth_date = UnicodeAttribute(null=True)
    patient_sex = UnicodeAttribute(null=True)
    # Empty string when unknown, so that the study still appears in the by_patient index.
    study_date = UnicodeAttribute(default="")
    study_time = UnicodeAttribute(null=True)
    accession_number = UnicodeAttribute(null=True)
    accession_issuer = UnicodeAttribute(null=True)
    study_id = UnicodeAttribute(null=True)
    study_description = UnicodeAttribute(null=True)
    referring_physician_name = UnicodeAttribute(null=True)
    specific_character_set = UnicodeAttribute(null=True)
    modalities = UnicodeSetAttribute(null=True)
    sop_classes = UnicodeSetAttribute(null=True)
    body_parts = UnicodeSetAttribute(null=True)
    number_of_series = NumberAttribute(default=0)
    number_of_instances = NumberAttribute(default=0)
    total_bytes = NumberAttribute(default=0)
    # Instances hidden by IOCM rejection notes (not in number_of_instances); a study whose every
    # instance is rejected disappears from C-FIND.
    rejected_instances = NumberAttribute(null=True)
    # Retention (docs/retention.md): the latest retention end of its instances (UTC ISO time), its
    # shard in the by_retention_end index, and how many legal holds name the study or its patient.
    retention_end = UnicodeAttribute(null=True)
    retention_shard = UnicodeAttribute(null=True)
    # What retention_end was counted from (model.retention.EndBasis); absent: the study date.
    retention_basis = UnicodeAttribute(null=True)
    legal_holds = NumberAttribute(null=True)
    # A 113039 rejection note asked for early destruction: its UID (retention_end was set to then).
    early_destruction_note = UnicodeAttribute(null=True)
    # The UIDs of the rejection notes that hid instances of the study (kept after a revoke): the
    # destruction job destroys their objects with the study's.
    rejection_notes = UnicodeSetAttribute(null=True)
    first_received_at = UTCDateTimeAttribute(null=True)
    updated_at = UTCDateTimeAttribute(null=True)
    # Storage tiers (docs/storage.md): instances whose object needs a restore before a read, kept
    # by the storage_events function from S3's events; and the study's restore, when one runs:
    # its state (REQUESTED -> RESTORING; removed when the last instance is back), when it was
    # asked for, its retrieval tier, when to retry, and the AEs to notify (IAN) when it is done.
    nearline_instances = NumberAttribute(null=True)
    restore_state = UnicodeAttribute(null=True)
    restore_requested_at = UTCDateTimeAttribute(null=True)
    restore_tier = UnicodeAttribute(null=True)
    restore_ready_by = UTCDateTimeAttribute(null=True)
    restore_requesters = UnicodeSetAttribute(null=True)
    restores_completed = NumberAttribute(null=True)
    by_patient = StudiesByPatient()
    by_accession = StudiesByAccession()
    by_retention_end = StudiesByRetentionEnd()
    by_org_date = StudiesByOrganisationDate()


class SeriesByOrganisationModality(GlobalSecondaryIndex["Series"]):
    """An organisation's series by modality and study date: the C-FIND ModalitiesInStudy lookup
    ("today's CT studies"), a study being found through any of its series. Keys only."""

    class Meta:
        index_name = "by_org_modality"
        projection = KeysOnlyProjection()

    org_modality = UnicodeAttribute(hash_key=True)  # "<organisation OID>|<Modality>"
    study_date = UnicodeAttribute(range_key=True)


class Series(Model):
    class Meta(_Unbound):
        logical_name = "series"

    study_uid = UnicodeAttribute(hash_key=True)
    series_uid = UnicodeAttribute(range_key=True)
    modality = UnicodeAttribute(null=True)
    series_number = UnicodeAttribute(null=True)
    series_description = UnicodeAttribute(null=True)
    series_date = UnicodeAttribute(null=True)
    body_part_examined = UnicodeAttribute(null=True)
    number_of_instances = NumberAttribute(default=0)
    rejected_instances = NumberAttribute(null=True)
    nearline_instances = NumberAttribute(null=True)
    updated_at = UTCDateTimeAttribute(null=True)
    # Set with the series' first instance, for the by_org_modality index.
    org_modality = UnicodeAttribute(null=True)
    study_date = UnicodeAttribute(null=True)
    by_org_modality = SeriesByOrganisationModality()


class InstancesByStudy(GlobalSecondaryIndex["Instance"]):
    class Meta:
        index_name = "by_study"
        projection = AllProjection()

    study_uid = UnicodeAttribute(hash_key=True)
    # "<series uid>/<sop instance uid>": begins_with(series uid) selects one series.
    series_sop = UnicodeAttribute(range_key=True)


class Instance(Model):
    """One stored SOP instance and where its immutable bytes are."""

    class Meta(_Unbound):
        logical_name = "instances"

    sop_instance_uid = UnicodeAttribute(hash_key=True)
    sop_class_uid = UnicodeAttribute()
    study_uid = UnicodeAttribute()
    series_uid = UnicodeAttribute()
    series_sop = UnicodeAttribute()
    instance_number = UnicodeAttribute(null=True)
    transfer_syntax_uid = UnicodeAttribute()
    s3_key = UnicodeAttribute()
    s3_version_id = UnicodeAttribute(null=True)
    sha256 = UnicodeAttribute()
    size = NumberAttribute()
    sending_ae = UnicodeAttribute(null=True)
    org_oid = UnicodeAttribute(null=True)
    received_at = UTCDateTimeAttribute()
    indexed_at = UTCDateTimeAttribute()
    rows = NumberAttribute(null=True)
    columns = NumberAttribute(null=True)
    number_of_frames = NumberAttribute(null=True)
    # Attributes that C-FIND IMAGE level and XDS-I manifests need, kept small.
    attributes = JSONAttribute(null=True)
    # IOCM: set while a rejection note hides the instance (its code and the note's SOP Instance UID).
    rejected = UnicodeAttribute(null=True)
    rejected_by = UnicodeAttribute(null=True)
    # Storage tiers: the object's storage class as S3 last reported it (absent: STANDARD), and
    # NEARLINE while that class needs a restore and no restored copy is readable.
    storage_class = UnicodeAttribute(null=True)
    availability = UnicodeAttribute(null=True)
    restored_until = UTCDateTimeAttribute(null=True)
    by_study = InstancesByStudy()


# --- IOCM corrections -------------------------------------------------------------------------


class Rejection(Model):
    """A received rejection note and its state; kept after a revoke, as evidence of both."""

    class Meta(_Unbound):
        logical_name = "rejections"

    note_uid = UnicodeAttribute(hash_key=True)
    code = UnicodeAttribute()
    org_oid = UnicodeAttribute()
    sending_ae = UnicodeAttribute()
    received_at = UTCDateTimeAttribute()
    # [[study, series, sop class, sop instance], ...] as the note's evidence lists them.
    references = JSONAttribute()
    state = UnicodeAttribute()  # APPLYING | ACTIVE | REVOKED
    s3_key = UnicodeAttribute()
    sha256 = UnicodeAttribute()
    revoked_at = UTCDateTimeAttribute(null=True)
    revoked_by = UnicodeAttribute(null=True)
    revoke_reason = UnicodeAttribute(null=True)


# --- retention ----------------------------------------------------------------------------------


class RetentionRuleItem(Model):
    """A retention rule of the configuration registry: per organisation and study type."""

    class Meta(_Unbound):
        logical_name = "retention_rules"

    org_oid = UnicodeAttribute(hash_key=True)
    study_type = UnicodeAttribute(range_key=True)  # a modality, or "*"
    years = NumberAttribute()
    days = NumberAttribute(default=0)
    allow_early_destruction = BooleanAttribute(default=False)  # before expiry_rejection: EARLY
    expiry_rejection = UnicodeAttribute(null=True)  # ExpiryRejection; absent: EXPIRED
    minimum_days = NumberAttribute(null=True)
    basis = UnicodeAttribute(null=True)  # RetentionBasis; absent: STUDY_DATE
    unknown_death_years_from_birth = NumberAttribute(null=True)
    approval_required = BooleanAttribute(null=True)  # destruction waits for a recorded approval
    updated_at = UTCDateTimeAttribute()


class RetentionJobItem(Model):
    """A retention job (docs/retention.md): lengthening what a grown rule covers, or recomputing a
    patient's studies after their death was recorded; its progress, page by page."""

    class Meta(_Unbound):
        logical_name = "retention_jobs"

    job_id = UnicodeAttribute(hash_key=True)
    kind = UnicodeAttribute()  # "rule" | "patient"
    target = UnicodeAttribute()  # "<organisation OID>|<study type>" | "<patient key>"
    state = UnicodeAttribute()  # RUNNING | DONE
    requested_by = UnicodeAttribute(null=True)
    reason = UnicodeAttribute(null=True)
    started_at = UTCDateTimeAttribute()
    updated_at = UTCDateTimeAttribute(null=True)
    finished_at = UTCDateTimeAttribute(null=True)
    pages = NumberAttribute(default=0)
    studies = NumberAttribute(default=0)
    studies_changed = NumberAttribute(default=0)
    objects_extended = NumberAttribute(default=0)
    # The pages done, so a redelivered page message is not counted twice.
    pages_done = UnicodeSetAttribute(null=True)


class LegalHoldItem(Model):
    """A legal hold on a study or a patient, with who placed it and why; released, never deleted."""

    class Meta(_Unbound):
        logical_name = "legal_holds"

    target = UnicodeAttribute(hash_key=True)  # "study:<uid>" | "patient:<key>"
    hold_id = UnicodeAttribute(range_key=True)
    placed_by = UnicodeAttribute()
    reason = UnicodeAttribute()
    placed_at = UTCDateTimeAttribute()
    released_at = UTCDateTimeAttribute(null=True)
    released_by = UnicodeAttribute(null=True)


class DestructionRecordItem(Model):
    """The record of a lawful destruction: written before the first delete ("PLANNED") and after
    the last ("COMPLETED"). Append-only, never destroyed."""

    class Meta(_Unbound):
        logical_name = "destruction_records"
        append_only = True

    study_uid = UnicodeAttribute(hash_key=True)
    event = UnicodeAttribute(range_key=True)  # "<UTC ISO time>#PLANNED|COMPLETED|APPROVED|..."
    org_oid = UnicodeAttribute(null=True)
    patient_key = UnicodeAttribute(null=True)
    retention_end = UTCDateTimeAttribute()
    at = UTCDateTimeAttribute()
    instance_count = NumberAttribute()
    total_bytes = NumberAttribute()
    # [{"key", "sha256", "size", "versions"}, ...]
    objects = JSONAttribute()
    approved_by = UnicodeAttribute(null=True)
    approval_reason = UnicodeAttribute(null=True)  # APPROVED items: why the operator approved
    rules = UnicodeSetAttribute(null=True)  # the retention rules the study was kept under
    rejection_note = UnicodeAttribute(null=True)  # the 113039 note that asked for early destruction
    # The study's XDS registry entries, Deprecated at destruction, removed at registry_removal_due
    # (the REGISTRY_REMOVED item of the record says when they were).
    registry_entries = UnicodeSetAttribute(null=True)
    registry_removal_due = UTCDateTimeAttribute(null=True)


# --- storage commitment -----------------------------------------------------------------------


class PendingCommitments(GlobalSecondaryIndex["StorageCommitment"]):
    """Sparse index: only commitments still to be reported carry ``pending``."""

    class Meta:
        index_name = "pending"
        projection = KeysOnlyProjection()

    pending = UnicodeAttribute(hash_key=True)
    next_attempt_at = NumberAttribute(range_key=True)


class UndeliverableCommitments(GlobalSecondaryIndex["StorageCommitment"]):
    """Sparse index: transactions whose report was given up on, for the operator (admin CLI)."""

    class Meta:
        index_name = "undeliverable"
        projection = AllProjection()

    undeliverable = UnicodeAttribute(hash_key=True)  # always "UNDELIVERABLE" where present
    undeliverable_at = NumberAttribute(range_key=True)


class StorageCommitment(Model):
    """A Storage Commitment Push Model transaction, from N-ACTION until its report is delivered.

    Kept small (it is updated on every lease and attempt): the references and the outcomes live
    in ``StorageCommitmentPart`` items, written with this one in one DynamoDB transaction.
    """

    class Meta(_Unbound):
        logical_name = "commitments"

    transaction_uid = UnicodeAttribute(hash_key=True)
    requester_ae = UnicodeAttribute()
    org_oid = UnicodeAttribute()
    # Listener task that received the N-ACTION; only it can report on the requester's association.
    origin = UnicodeAttribute(null=True)
    reference_count = NumberAttribute()
    request_parts = NumberAttribute()
    state = UnicodeAttribute()  # PENDING | REPORTED | UNDELIVERABLE
    pending = UnicodeAttribute(null=True)
    next_attempt_at = NumberAttribute(null=True)
    received_at = UTCDateTimeAttribute()
    deadline_at = NumberAttribute()
    attempts = NumberAttribute(default=0)
    lease_owner = UnicodeAttribute(null=True)
    lease_until = NumberAttribute(default=0)
    # Set once the outcome is frozen (number of result parts written with it).
    result_parts = NumberAttribute(null=True)
    committed_count = NumberAttribute(null=True)
    failed_count = NumberAttribute(null=True)
    reported_at = UTCDateTimeAttribute(null=True)
    reported_on = UnicodeAttribute(null=True)  # SAME_ASSOCIATION | NEW_ASSOCIATION
    last_error = UnicodeAttribute(null=True)
    undeliverable = UnicodeAttribute(null=True)
    undeliverable_at = NumberAttribute(null=True)
    pending_index = PendingCommitments()
    undeliverable_index = UndeliverableCommitments()


class StorageCommitmentPart(Model):
    """A slice of a transaction: up to 1,000 of its references, or the outcomes of one such slice.

    DynamoDB items hold at most 400 KB; a request for 10,000 instances (large CT, MR and
    tomosynthesis studies) is about 1 MB, so it is split here, in request order.
    """

    class Meta(_Unbound):
        logical_name = "commitment_parts"

    transaction_uid = UnicodeAttribute(hash_key=True)
    part = UnicodeAttribute(range_key=True)  # "request#0000" ... | "result#0000" ...
    # Request slice: distinct SOP Class UIDs, then [class index, SOP Instance UID] per reference.
    sop_classes = JSONAttribute(null=True)
    references = JSONAttribute(null=True)
    # Result slice: per reference of the request slice with the same number, 0 (committed) or
    # its Failure Reason.
    outcomes = JSONAttribute(null=True)


# --- access record (start of the disclosure log; see docs/disclosure-log.md) ------------------


class AccessRecordsByOrganisation(GlobalSecondaryIndex["AccessRecord"]):
    """What one organisation read, in time order (supervision, the controller's own audit)."""

    class Meta:
        index_name = "by_organisation"
        projection = AllProjection()

    org_oid = UnicodeAttribute(hash_key=True)
    at_event = UnicodeAttribute(range_key=True)


class AccessRecord(Model):
    """One patient's part of one C-FIND, C-MOVE or C-GET. Append-only: written once, never updated.

    Keyed by patient so that "who has read this patient's data" is one Query (the disclosure log's
    main question); ``at_event`` = "<UTC ISO time>#<event id>#<part>" keeps parts of an event apart.
    """

    class Meta(_Unbound):
        logical_name = "access_log"
        # Written once per item, never updated or deleted: writers get PutItem, not UpdateItem/DeleteItem.
        append_only = True

    patient_key = UnicodeAttribute(hash_key=True)
    at_event = UnicodeAttribute(range_key=True)
    event_id = UnicodeAttribute()
    at = UTCDateTimeAttribute()
    operation = UnicodeAttribute()  # C-FIND | C-MOVE | C-GET
    calling_ae = UnicodeAttribute()
    org_oid = UnicodeAttribute()
    # Organisation whose register the data belongs to; differs from org_oid on a disclosure.
    controller_oid = UnicodeAttribute(null=True)
    disclosure = BooleanAttribute(default=False)
    destination_ae = UnicodeAttribute(null=True)
    level = UnicodeAttribute(null=True)
    query_keys = JSONAttribute(null=True)
    study_uid = UnicodeAttribute(null=True)
    instances = ListAttribute(of=UnicodeAttribute, null=True)
    number_of_instances = NumberAttribute(default=0)
    outcome = UnicodeAttribute(null=True)
    by_organisation = AccessRecordsByOrganisation()


# --- HL7 patient administration ---------------------------------------------------------------


class HL7Facility(Model):
    """A sending facility (MSH-4) registered to an organisation, with its identifier namespaces.

    MSH-4 is looked up here by key when it is not itself a registered organisation OID. The
    namespaces map namespace-only assigning authorities (PID-3.4 ``^^^ADT1``) to issuer OIDs.
    """

    class Meta(_Unbound):
        logical_name = "hl7_facilities"

    facility = UnicodeAttribute(hash_key=True)
    org_oid = UnicodeAttribute()
    issuer_namespaces = JSONAttribute(default=dict)
    created_at = UTCDateTimeAttribute()


class PatientChange(Model):
    """Append-only history of every HL7 change to a patient identity (never updated or deleted).

    One item per affected identity per message: a merge is recorded under the prior and under the
    surviving key, so the history of either shows it. ``change_id`` sorts by receipt time.
    """

    class Meta(_Unbound):
        logical_name = "patient_history"
        append_only = True  # the change history is evidence: put once, never changed

    patient_key = UnicodeAttribute(hash_key=True)
    change_id = UnicodeAttribute(range_key=True)  # "<received at, UTC ISO>#<message id>"
    event = UnicodeAttribute()  # A40 | A47 | A08 | A31
    outcome = UnicodeAttribute()  # APPLIED | UNCHANGED | REFUSED
    message_control_id = UnicodeAttribute()
    sender = UnicodeAttribute()  # "<MSH-3>|<MSH-4>"
    org_oid = UnicodeAttribute()
    received_at = UTCDateTimeAttribute()
    applied_at = UTCDateTimeAttribute()
    before = JSONAttribute(null=True)
    after = JSONAttribute(null=True)
    related_key = UnicodeAttribute(null=True)  # the other identity of a merge or identifier change
    reason = UnicodeAttribute(null=True)
    message = UnicodeAttribute()  # the HL7 message as received (decoded)


# --- registration: the XDS registry, registration state, IAN notifications, configuration ----


class RegistryByPatient(GlobalSecondaryIndex["XdsRegistryItem"]):
    """Sparse: registry objects by patient and kind, sorted by status then time, so FindDocuments,
    FindSubmissionSets and FindFolders are one Query per status (with a time range on the sort key)."""

    class Meta:
        index_name = "by_patient"
        projection = AllProjection()

    patient_kind = UnicodeAttribute(hash_key=True)  # "<patient CX>#<kind>"
    status_time = UnicodeAttribute(range_key=True)  # "<status>#<UTC ISO time>"


class XdsRegistryItem(Model):
    """The XDS registry, one table, four item shapes (see archive.data.xds_registry):

    - ``O#<entryUUID>`` / ``O``: a DocumentEntry, SubmissionSet, Folder or Association (``body``);
    - ``U#<kind>#<uniqueId>`` / ``U``: the uniqueId guard (conditioned not to exist) -> entryUUID;
    - ``R#<patient CX>#<CXi>`` / ``<entryUUID>``: a document's referenceIdList value;
    - ``A#<entryUUID>`` / ``<association entryUUID>``: an association, under each of its two ends.
    """

    class Meta(_Unbound):
        logical_name = "xds_registry"

    pk = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True)
    kind = UnicodeAttribute(null=True)
    entry_uuid = UnicodeAttribute(null=True)
    status = UnicodeAttribute(null=True)
    patient_kind = UnicodeAttribute(null=True)
    status_time = UnicodeAttribute(null=True)
    body = JSONAttribute(null=True)
    by_patient = RegistryByPatient()


class RegistrationsByRemovalDue(GlobalSecondaryIndex["Registration"]):
    """Sparse: destroyed studies whose Deprecated registry entries wait for removal, by when."""

    class Meta:
        index_name = "by_removal_due"
        projection = KeysOnlyProjection()

    removal_shard = UnicodeAttribute(hash_key=True)
    removal_due = UnicodeAttribute(range_key=True)


class Registration(Model):
    """Where a study stands in registration: committed, registered (which version, which entry)."""

    class Meta(_Unbound):
        logical_name = "registrations"

    study_uid = UnicodeAttribute(hash_key=True)
    org_oid = UnicodeAttribute()
    state = UnicodeAttribute()  # COMMITTED | REGISTERED
    version = NumberAttribute(default=0)
    entry_uuid = UnicodeAttribute(null=True)
    manifest_uid = UnicodeAttribute(null=True)
    fingerprint = UnicodeAttribute(null=True)
    patient_id = UnicodeAttribute(null=True)
    committed_at = UTCDateTimeAttribute(null=True)
    registered_at = UTCDateTimeAttribute(null=True)
    # Epoch seconds until which a registration message is on its way (one message per quiet period).
    queued_until = NumberAttribute(default=0)
    # Destruction (docs/retention.md): the study's Deprecated entries and when they are removed.
    removal_entries = UnicodeSetAttribute(null=True)
    removal_shard = UnicodeAttribute(null=True)
    removal_due = UnicodeAttribute(null=True)
    by_removal_due = RegistrationsByRemovalDue()


class OpenNotifications(GlobalSecondaryIndex["IanNotification"]):
    """Sparse: notifications not delivered yet (PENDING) or given up on (FAILED), oldest first."""

    class Meta:
        index_name = "open"
        projection = AllProjection()

    open_state = UnicodeAttribute(hash_key=True)
    created = UnicodeAttribute(range_key=True)


class IanNotification(Model):
    """One Instance Availability Notification to one destination AE for one registration version."""

    class Meta(_Unbound):
        logical_name = "ian_notifications"

    study_uid = UnicodeAttribute(hash_key=True)
    key = UnicodeAttribute(range_key=True)  # "<version, 6 digits>#<destination AE>"
    version = NumberAttribute()
    destination_ae = UnicodeAttribute()
    org_oid = UnicodeAttribute()
    state = UnicodeAttribute()  # PENDING | DELIVERED | FAILED
    open_state = UnicodeAttribute(null=True)
    created = UnicodeAttribute()
    attempts = NumberAttribute(default=0)
    last_error = UnicodeAttribute(null=True)
    delivered_at = UTCDateTimeAttribute(null=True)
    open_notifications = OpenNotifications()


class RegistrationConfig(Model):
    """Registration configuration: ``archive`` (the archive's identity), ``domain#<OID>`` (an
    affinity domain's codes), ``org#<OID>`` (an organisation's codes, time zone, stability time)."""

    class Meta(_Unbound):
        logical_name = "registration_config"

    scope = UnicodeAttribute(hash_key=True)
    data = JSONAttribute()
    updated_at = UTCDateTimeAttribute()


# --- disclosure log (hash-chained per patient; see docs/disclosure-log.md) ----------------------


class DisclosuresByDay(GlobalSecondaryIndex["DisclosureEntry"]):
    """Sparse: the entries of one UTC day in time order, so the anchoring job finds the chains
    that grew since its last run without a scan."""

    class Meta:
        index_name = "by_day"
        projection = KeysOnlyProjection()

    day = UnicodeAttribute(hash_key=True)
    at_key = UnicodeAttribute(range_key=True)


class DisclosureEntry(Model):
    """One disclosure of one patient's data, a link in that patient's hash chain. Append-only.

    ``seq`` counts 1, 2, 3 ... per patient; ``prev_hash`` is the ``entry_hash`` of entry ``seq-1``
    (64 zeros for the first); ``entry_hash`` is SHA-256 over the canonical JSON of every other
    attribute (``archive.model.disclosure``). Idempotency markers of customers' notifications live
    in the same table under keys starting with ``#`` (never a patient's key).
    """

    class Meta(_Unbound):
        logical_name = "disclosure_log"
        append_only = True

    patient_key = UnicodeAttribute(hash_key=True)
    seq = NumberAttribute(range_key=True)
    entry_id = UnicodeAttribute()
    content = JSONAttribute(null=True)
    prev_hash = UnicodeAttribute(null=True)
    entry_hash = UnicodeAttribute(null=True)
    recorded_at = UTCDateTimeAttribute(null=True)
    day = UnicodeAttribute(null=True)
    at_key = UnicodeAttribute(null=True)
    # On a marker item: where the entry it stands for is.
    target_key = UnicodeAttribute(null=True)
    target_seq = NumberAttribute(null=True)
    by_day = DisclosuresByDay()


ALL_MODELS: tuple[type[Model], ...] = (
    Organisation,
    ApplicationEntity,
    Patient,
    Study,
    Series,
    Instance,
    StorageCommitment,
    StorageCommitmentPart,
    AccessRecord,
    HL7Facility,
    PatientChange,
    Rejection,
    RetentionRuleItem,
    RetentionJobItem,
    LegalHoldItem,
    DestructionRecordItem,
    XdsRegistryItem,
    Registration,
    IanNotification,
    RegistrationConfig,
    DisclosureEntry,
)


def bind_models(settings: Settings, models: tuple[type[Model], ...] = ALL_MODELS) -> None:
    """Point every model at its physical table and endpoint. Call once at start-up."""
    for model in models:
        meta: Any = model.Meta
        meta.table_name = settings.tables[meta.logical_name]
        meta.region = settings.region
        meta.host = settings.endpoint_url
        # pynamodb caches its connection per model; drop it so the new binding takes effect.
        model._connection = None


# The tables every C-STORE touches (the directory, patients, studies, instances, retention rules)
# and the commitment worker's: their clients are created at start-up, not in the first C-STORE.
STORE_PATH_MODELS: tuple[type[Model], ...] = (
    Organisation,
    ApplicationEntity,
    Patient,
    Study,
    Instance,
    Rejection,
    RetentionRuleItem,
    StorageCommitment,
    StorageCommitmentPart,
)


def connect(models: tuple[type[Model], ...] = STORE_PATH_MODELS) -> None:
    """Create each model's DynamoDB client now: a botocore client costs 0.1-1 s of CPU to build
    (it loads and parses the service model), which would otherwise land in the first request that
    uses each table, in the middle of an association."""
    for model in models:
        model._get_connection().connection.client  # noqa: B018 - the property builds the client
