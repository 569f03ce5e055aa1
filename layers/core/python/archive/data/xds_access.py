"""Who may talk XDS to the archive, and which documents a patient keeps from other organisations.

- identity providers (XUA): ``idp#<issuer>`` items of the registration configuration table, each
  with its signing certificates (PEM, several during a rollover);
- document repositories (ITI-42 senders): ``xds-repository#<organisation OID>`` items with the
  repositoryUniqueIds the organisation's repository owns and the codes it may register;
- denials of disclosure: ``D#<patient CX>`` items of the XDS registry table (the registry keeps
  them beside the documents they hide), one per denied document uniqueId or ``*`` for all.

Every read is a GetItem or a Query on a key; listings for the admin CLI Query one partition.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from pynamodb.exceptions import DoesNotExist

from archive.data.models import RegistrationConfig, XdsRegistryItem
from archive.model.xua import IdentityProvider

IDP_SCOPE = "idp#"
REPOSITORY_SCOPE = "xds-repository#"
DENIAL_PREFIX = "D#"
ALL_DOCUMENTS = "*"


@dataclass(frozen=True)
class DocumentRepository:
    """An organisation's document repository allowed to register documents (ITI-42).

    ``codes`` maps a DocumentEntry attribute (classCode, typeCode, formatCode, confidentialityCode,
    healthcareFacilityTypeCode, practiceSettingCode, eventCodeList, contentTypeCode) to the accepted
    ``code^scheme`` values; a code outside its list is refused."""

    org_oid: str
    repository_unique_ids: tuple[str, ...]
    codes: dict[str, tuple[str, ...]] = field(default_factory=dict)


class XdsAccessConfig:
    """Identity providers and document repositories (configuration table)."""

    def set_identity_provider(self, provider: IdentityProvider) -> None:
        RegistrationConfig(
            IDP_SCOPE + provider.issuer,
            data={"issuer": provider.issuer, "certificates": list(provider.certificates)},
            updated_at=datetime.now(UTC),
        ).save()

    def identity_provider(self, issuer: str) -> IdentityProvider | None:
        try:
            data = RegistrationConfig.get(IDP_SCOPE + issuer, consistent_read=True).data
        except DoesNotExist:
            return None
        return IdentityProvider(data["issuer"], tuple(data.get("certificates", ())))

    def remove_identity_provider(self, issuer: str) -> None:
        RegistrationConfig(IDP_SCOPE + issuer).delete()

    def set_repository(self, repository: DocumentRepository) -> None:
        RegistrationConfig(
            REPOSITORY_SCOPE + repository.org_oid,
            data={
                "repository_unique_ids": list(repository.repository_unique_ids),
                "codes": {k: list(v) for k, v in repository.codes.items()},
            },
            updated_at=datetime.now(UTC),
        ).save()

    def repository(self, org_oid: str) -> DocumentRepository | None:
        try:
            data = RegistrationConfig.get(REPOSITORY_SCOPE + org_oid, consistent_read=True).data
        except DoesNotExist:
            return None
        return DocumentRepository(
            org_oid,
            tuple(data.get("repository_unique_ids", ())),
            {k: tuple(v) for k, v in data.get("codes", {}).items()},
        )


class DisclosureDenials:
    """A patient's denials of disclosure, kept in the registry table under ``D#<patient CX>``."""

    def deny(self, patient_id: str, document_unique_id: str = ALL_DOCUMENTS, *, reason: str = "") -> None:
        XdsRegistryItem(
            DENIAL_PREFIX + patient_id,
            document_unique_id,
            kind="Denial",
            body={"reason": reason, "at": datetime.now(UTC).isoformat()},
        ).save()

    def withdraw(self, patient_id: str, document_unique_id: str = ALL_DOCUMENTS) -> None:
        XdsRegistryItem(DENIAL_PREFIX + patient_id, document_unique_id).delete()

    def denied(self, patient_id: str) -> frozenset[str]:
        """The patient's denied document uniqueIds (``*``: every document); one Query."""
        return frozenset(
            i.sk for i in XdsRegistryItem.query(DENIAL_PREFIX + patient_id, consistent_read=True)
        )
