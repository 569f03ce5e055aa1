"""Which DynamoDB tables each part of the archive may use, and how: least privilege, in one place.

Each service is granted only the tables its code touches, with only the kind of access it needs.
When code starts using another table (or writing one it only read), its entry here changes with it;
``tests/infrastructure/test_least_privilege.py`` states the same expectations independently.

Kinds of access (IAM actions on the table and its secondary indexes):

- READ: GetItem, BatchGetItem, Query.
- APPEND: READ + PutItem: items are created, never changed or deleted (the access log, the patient
  change history; the tables' specs mark them ``append_only`` and a WRITE grant on them is refused).
- WRITE: READ + PutItem, UpdateItem.

Nothing a service runs deletes items, scans a table or writes in batches, so no role gets DeleteItem,
Scan or BatchWriteItem; those are the operator's (admin CLI) with their own credentials.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum


class Access(Enum):
    READ = ("dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query")
    APPEND = (*READ, "dynamodb:PutItem")
    WRITE = (*READ, "dynamodb:PutItem", "dynamodb:UpdateItem")

    @property
    def actions(self) -> tuple[str, ...]:
        return self.value

    @property
    def writes(self) -> bool:
        return self is not Access.READ


TableAccess = Mapping[str, Access]

# listeners/dicom: association checks (registry), C-STORE (claims the study for its patient before
# acknowledging), storage commitment (its transactions; reads the index), C-FIND/C-MOVE/C-GET (reads
# the index), and the access record of every query and retrieval.
DICOM_LISTENER: TableAccess = {
    "organisations": Access.READ,
    "application_entities": Access.READ,
    "patients": Access.READ,
    "studies": Access.WRITE,
    "series": Access.READ,
    "instances": Access.READ,
    "commitments": Access.WRITE,
    "commitment_parts": Access.WRITE,
    "access_log": Access.APPEND,
}

# functions/index_instance: records each stored instance and the aggregates above it, in one
# transaction (puts the instance, updates series, study and patient).
INDEX_INSTANCE: TableAccess = {
    "patients": Access.WRITE,
    "studies": Access.WRITE,
    "series": Access.WRITE,
    "instances": Access.WRITE,
}

# listeners/hl7: resolves the sending facility and organisation, and checks the patient identities
# a message names before queueing it; it never writes (the patient_update function does).
HL7_LISTENER: TableAccess = {
    "organisations": Access.READ,
    "hl7_facilities": Access.READ,
    "patients": Access.READ,
}

# functions/patient_update: applies merges, identifier changes and name updates to patients and
# their studies, and appends each to the patient's change history.
PATIENT_UPDATE: TableAccess = {
    "patients": Access.WRITE,
    "studies": Access.WRITE,
    "patient_history": Access.APPEND,
}
