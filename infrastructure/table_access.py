"""Which DynamoDB tables each part of the archive may use, and how: least privilege, in one place.

Each service is granted only the tables its code touches, with only the kind of access it needs.
When code starts using another table (or writing one it only read), its entry here changes with it;
``tests/infrastructure/test_least_privilege.py`` states the same expectations independently.

Kinds of access (IAM actions on the table and its secondary indexes):

- READ: GetItem, BatchGetItem, Query, ConditionCheckItem (a transaction's check on an item it
  does not write).
- APPEND: READ + PutItem: items are created, never changed or deleted. The only kind besides READ
  that an append-only table (its model says ``append_only``: the access log, the change history, the
  disclosure log, the destruction records) may be granted; anything else fails at synth.
- WRITE: READ + PutItem, UpdateItem.
- OWN: WRITE + DeleteItem, for the one table whose entries a service removes again (the XDS
  registry: a registration written in several DynamoDB transactions is undone when one fails).
- REMOVE: READ + DeleteItem, never a write: the destruction job's access to the index entries of
  studies whose retention has ended.

No service scans a table or writes in batches, so no role gets Scan or BatchWriteItem; only OWN
and REMOVE grant DeleteItem; the rest is the operator's (admin CLI) with their own credentials.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum


class Access(Enum):
    READ = ("dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query", "dynamodb:ConditionCheckItem")
    APPEND = (*READ, "dynamodb:PutItem")
    WRITE = (*READ, "dynamodb:PutItem", "dynamodb:UpdateItem")
    OWN = (*READ, "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem")
    REMOVE = (*READ, "dynamodb:DeleteItem")

    @property
    def actions(self) -> tuple[str, ...]:
        return self.value

    @property
    def writes(self) -> bool:
        """Changes items: the tables' key is granted to encrypt as well, as CDK's write grants do."""
        return self is not Access.READ


TableAccess = Mapping[str, Access]

# Asking for a study's registration (archive.services.registration.RegistrationRequests): the
# organisation's registration settings, and the study's registration schedule.
_REQUESTS_REGISTRATION: TableAccess = {
    "registration_config": Access.READ,
    "registrations": Access.WRITE,
}

# listeners/dicom: association checks (registry, certificates), C-STORE (claims the study for its
# patient before acknowledging; the organisation's retention rules and the study's retention end; an
# IOCM rejection note hides instances and takes them out of their series' and study's counts),
# storage commitment (its transactions; reads the index; asks for the registration of committed
# studies), C-FIND/C-MOVE/C-GET (reads the index), and the access record of every query and retrieval.
DICOM_LISTENER: TableAccess = {
    **_REQUESTS_REGISTRATION,
    "organisations": Access.READ,
    "application_entities": Access.READ,
    "patients": Access.READ,
    "studies": Access.WRITE,
    "series": Access.WRITE,
    "instances": Access.WRITE,
    "rejections": Access.WRITE,
    "retention_rules": Access.READ,
    "legal_holds": Access.READ,  # an object stored into a held study gets S3's legal hold at PUT
    "commitments": Access.WRITE,
    "commitment_parts": Access.WRITE,
    "access_log": Access.APPEND,
}

# functions/index_instance: records each stored instance and the aggregates above it, in one
# transaction (puts the instance, updates series, study and patient); asks for the registration of a
# registered study that changed.
INDEX_INSTANCE: TableAccess = {
    **_REQUESTS_REGISTRATION,
    "patients": Access.WRITE,
    "studies": Access.WRITE,
    "series": Access.WRITE,
    "instances": Access.WRITE,
}

# listeners/hl7: resolves the sending facility and organisation, and before queueing a message
# checks it was not handled before (sender + MSH-10, in the change history), the identities it
# names and which organisations control their studies; it never writes (the patient_update
# function does, refusals included).
HL7_LISTENER: TableAccess = {
    "organisations": Access.READ,
    "hl7_facilities": Access.READ,
    "patients": Access.READ,
    "studies": Access.READ,
    "patient_history": Access.READ,
}

# functions/patient_update: applies merges, identifier changes and name updates to patients and
# their studies, appends each to the patient's change history, and asks for the studies' registration.
PATIENT_UPDATE: TableAccess = {
    **_REQUESTS_REGISTRATION,
    "patients": Access.WRITE,
    "studies": Access.WRITE,
    "patient_history": Access.APPEND,
    "retention_jobs": Access.APPEND,  # a death recorded or retracted (PID-29/30) starts a job
}

# Reading a study's content for a manifest or an IAN (archive.data.registration.StudyContentReader).
_READS_STUDY_CONTENT: TableAccess = {
    "patients": Access.READ,
    "studies": Access.READ,
    "series": Access.READ,
    "instances": Access.READ,
}

# functions/register_study: builds the study's KOS manifest, registers it in the XDS registry (its
# entries; a failed multi-transaction registration is deleted again), records the registration and
# creates the IAN notifications for the organisation's IAN destinations.
REGISTER_STUDY: TableAccess = {
    **_READS_STUDY_CONTENT,
    "organisations": Access.READ,
    "application_entities": Access.READ,
    "registration_config": Access.READ,
    "registrations": Access.WRITE,
    "xds_registry": Access.OWN,
    "ian_notifications": Access.APPEND,
}

# functions/send_ian: sends an IAN to its destination AE (over TLS with the organisation's
# certificate names where the AE wants it) and records each attempt.
SEND_IAN: TableAccess = {
    **_READS_STUDY_CONTENT,
    "organisations": Access.READ,
    "application_entities": Access.READ,
    "registration_config": Access.READ,
    "ian_notifications": Access.WRITE,
}

# functions/storage_events: S3's storage class and restore events flip an instance's availability
# with its series' and study's NEARLINE counts (one transaction); a study whose restore completed is
# closed and its requesters' IANs are created (and queued).
STORAGE_EVENTS: TableAccess = {
    "studies": Access.WRITE,
    "series": Access.WRITE,
    "instances": Access.WRITE,
    "ian_notifications": Access.APPEND,
}

# functions/restore_study: the study's NEARLINE instances (RestoreObject each), its restore state.
RESTORE_STUDY: TableAccess = {
    "studies": Access.WRITE,
    "instances": Access.READ,
}

# functions/extend_retention: a retention job's page: studies through the patient / organisation
# indexes, their patient's death and birth, the organisation's rules; raises the studies'
# retention ends and counts the job's progress; finds the studies' manifests in the XDS registry.
EXTEND_RETENTION: TableAccess = {
    "patients": Access.READ,
    "studies": Access.WRITE,
    "series": Access.READ,
    "instances": Access.READ,
    "retention_rules": Access.READ,
    "retention_jobs": Access.WRITE,
    "xds_registry": Access.READ,
}

# functions/destroy_expired: finds studies whose retention has ended (and no legal hold), deletes
# their object versions, records each destruction and removes the studies' index entries; marks
# their XDS registry entries Deprecated and removes them after the policy's delay (the study's
# registration item says which and when). Reads the organisation's rules (which need an
# operator's approval, and what the record names) and the approvals among the destruction records.
DESTROY_EXPIRED: TableAccess = {
    "retention_rules": Access.READ,
    "studies": Access.REMOVE,
    "series": Access.REMOVE,
    "instances": Access.REMOVE,
    "destruction_records": Access.APPEND,
    "registrations": Access.WRITE,
    "xds_registry": Access.OWN,
}

# functions/admin_api: the disclosure log's reports and verification for a patient (and the identities
# merged into it).
ADMIN_API: TableAccess = {
    "patients": Access.READ,
    "disclosure_log": Access.READ,
}

# functions/disclosure_anchor: the heads of the chains written lately, anchored in the audit bucket.
DISCLOSURE_ANCHOR: TableAccess = {
    "disclosure_log": Access.READ,
}

# functions/disclosure_notification: a customer's notification of a disclosure it made, checked
# against the organisation's certificate, the patient and the study, appended to the patient's chain.
DISCLOSURE_NOTIFICATION: TableAccess = {
    "organisations": Access.READ,
    "patients": Access.READ,
    "studies": Access.READ,
    "disclosure_log": Access.APPEND,
}

# functions/xds_registry: ITI-18 (the registry's entries by patient and identifier; the patient
# must be known to the index; the patient's denials) and ITI-42 (registers a submission, deleting a
# multi-transaction registration again when one fails); identity providers and document
# repositories from the configuration; every read in the access log, reads of another
# organisation's data also in the patient's disclosure chain.
XDS_REGISTRY: TableAccess = {
    "organisations": Access.READ,  # a client certificate's organisation against the XUA one
    "registration_config": Access.READ,
    "patients": Access.READ,
    "xds_registry": Access.OWN,
    "access_log": Access.APPEND,
    "disclosure_log": Access.APPEND,
}

# functions/xds_repository: ITI-43 finds the manifests' entries (and the patient's denials) in the
# registry; reads logged as above.
XDS_REPOSITORY: TableAccess = {
    "organisations": Access.READ,  # a client certificate's organisation against the XUA one
    "registration_config": Access.READ,
    "xds_registry": Access.READ,
    "access_log": Access.APPEND,
    "disclosure_log": Access.APPEND,
}

# listeners/xds_imaging: RAD-69 reads the instances, their studies and current patients from the
# index (as C-GET does), the study's registration (its manifest, for denials) and the patient's
# denials in the registry; reads logged as above.
XDS_IMAGING: TableAccess = {
    "organisations": Access.READ,  # a client certificate's organisation against the XUA one
    "registration_config": Access.READ,
    "registrations": Access.READ,
    "patients": Access.READ,
    "studies": Access.WRITE,  # a RAD-69 of NEARLINE instances opens (or joins) the study's restore
    "instances": Access.READ,
    "xds_registry": Access.READ,
    "access_log": Access.APPEND,
    "disclosure_log": Access.APPEND,
}
