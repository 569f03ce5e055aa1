"""The configuration registry: customer organisations and their DICOM application entities.

Lives in DynamoDB, managed by the admin CLI (``python -m admin``). The listeners' hot path reads it
through the one cache in ``archive.services.directory``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime

from pynamodb.exceptions import DoesNotExist, PutError

from archive.data.models import ApplicationEntity, Organisation
from archive.errors import DuplicateEntry, UnknownApplicationEntity, UnknownOrganisation
from archive.model.organisations import ROLES, AEInfo, OrganisationInfo


def _org(item: Organisation) -> OrganisationInfo:
    issuers: list[str] = list(item.trusted_issuers or [])  # type: ignore[arg-type]
    return OrganisationInfo(item.oid, item.name, tuple(issuers), item.default_issuer)


def _ae(item: ApplicationEntity) -> AEInfo:
    return AEInfo(
        item.ae_title,
        item.org_oid,
        item.host,
        int(item.port),
        bool(item.tls),
        tuple(str(r) for r in item.roles or ()),
        item.description,
    )


class Registry:
    """Reads and writes organisations and AEs."""

    def add_organisation(self, org: OrganisationInfo, *, replace: bool = False) -> None:
        item = Organisation(
            org.oid,
            name=org.name,
            trusted_issuers=list(org.trusted_issuers),
            default_issuer=org.default_issuer,
            created_at=datetime.now(UTC),
        )
        try:
            item.save(condition=None if replace else Organisation.oid.does_not_exist())
        except PutError as exc:
            raise DuplicateEntry(f"organisation {org.oid} exists") from exc

    def get_organisation(self, oid: str) -> OrganisationInfo:
        try:
            return _org(Organisation.get(oid, consistent_read=True))
        except DoesNotExist as exc:
            raise UnknownOrganisation(oid) from exc

    def list_organisations(self) -> Iterator[OrganisationInfo]:
        # Admin listing of a small configuration table; never on a request path.
        return (_org(o) for o in Organisation.scan())

    def remove_organisation(self, oid: str) -> None:
        if any(True for _ in self.list_aes(oid)):
            raise DuplicateEntry(f"organisation {oid} still has application entities; remove them first")
        try:
            Organisation.get(oid).delete()
        except DoesNotExist as exc:
            raise UnknownOrganisation(oid) from exc

    def add_ae(self, ae: AEInfo, *, replace: bool = False) -> None:
        self.get_organisation(ae.org_oid)
        unknown = set(ae.roles) - set(ROLES)
        if unknown:
            raise ValueError(f"unknown roles {sorted(unknown)}; known: {', '.join(ROLES)}")
        if not 0 < len(ae.ae_title) <= 16:
            raise ValueError("AE title must be 1-16 characters")
        item = ApplicationEntity(
            ae.ae_title,
            org_oid=ae.org_oid,
            host=ae.host,
            port=ae.port,
            tls=ae.tls,
            roles=list(ae.roles),
            description=ae.description,
        )
        try:
            item.save(condition=None if replace else ApplicationEntity.ae_title.does_not_exist())
        except PutError as exc:
            raise DuplicateEntry(f"AE {ae.ae_title} exists") from exc

    def get_ae(self, ae_title: str) -> AEInfo:
        try:
            return _ae(ApplicationEntity.get(ae_title))
        except DoesNotExist as exc:
            raise UnknownApplicationEntity(ae_title) from exc

    def list_aes(self, org_oid: str | None = None) -> Iterable[AEInfo]:
        if org_oid:
            return (_ae(a) for a in ApplicationEntity.by_organisation.query(org_oid))
        return (_ae(a) for a in ApplicationEntity.scan())

    def remove_ae(self, ae_title: str) -> None:
        try:
            ApplicationEntity.get(ae_title).delete()
        except DoesNotExist as exc:
            raise UnknownApplicationEntity(ae_title) from exc
