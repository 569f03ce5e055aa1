"""Patient identity: a Patient ID qualified by its issuer, and the one rule for which issuers count."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeGuard

from archive.model.organisations import OrganisationInfo


@dataclass(frozen=True)
class PatientIdentity:
    """Patient ID qualified by its assigning authority (an OID, or a namespace where there is none)."""

    patient_id: str
    issuer: str

    @property
    def key(self) -> str:
        return f"{self.patient_id}^^^{self.issuer}"

    @classmethod
    def from_key(cls, key: str) -> PatientIdentity:
        patient_id, _, issuer = key.partition("^^^")
        return cls(patient_id, issuer)


def is_trusted_issuer(issuer: str | None, org: OrganisationInfo) -> TypeGuard[str]:
    """Whether ``org`` vouches for identifiers of ``issuer``: one of its trusted issuers or its
    default issuer. The same rule for DICOM (Issuer of Patient ID) and HL7 (assigning authority)."""
    trusted = set(org.trusted_issuers) | ({org.default_issuer} if org.default_issuer else set())
    return bool(issuer) and issuer in trusted
