"""The configuration registry: customer organisations and their DICOM application entities.

Lives in DynamoDB, managed by the admin CLI (``python -m admin``). The listeners' hot path reads it
through the one cache in ``archive.services.directory``.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Iterator
from dataclasses import replace as with_fields
from datetime import UTC, datetime

from pynamodb.exceptions import DoesNotExist, PutError

from archive.data.models import ApplicationEntity, Organisation
from archive.errors import DuplicateEntry, UnknownApplicationEntity, UnknownOrganisation
from archive.model.organisations import ROLES, AEInfo, OrganisationInfo


def resolve_networks(entries: Iterable[str]) -> tuple[str, ...]:
    """Addresses, networks (CIDR) or host names as the operator gives them, as networks.

    A host name is resolved now, at registration, to every address it has: the check at
    association time never depends on DNS (which the caller's network may control).
    """
    networks: list[str] = []
    for entry in entries:
        entry = entry.strip()
        try:
            networks.append(str(ipaddress.ip_network(entry, strict=False)))
            continue
        except ValueError:
            pass
        try:
            infos = socket.getaddrinfo(entry, None, proto=socket.IPPROTO_TCP)
        except (OSError, UnicodeError) as exc:
            raise ValueError(f"cannot resolve host {entry!r}: {exc}") from exc
        networks.extend(str(ipaddress.ip_network(info[4][0])) for info in infos)
    if not networks:
        raise ValueError("no address to register")
    return tuple(dict.fromkeys(networks))


def _org(item: Organisation) -> OrganisationInfo:
    issuers: list[str] = list(item.trusted_issuers or [])  # type: ignore[arg-type]
    names: list[str] = list(item.certificate_names or [])  # type: ignore[arg-type]
    return OrganisationInfo(item.oid, item.name, tuple(issuers), item.default_issuer, tuple(names))


def _ae(item: ApplicationEntity) -> AEInfo:
    return AEInfo(
        item.ae_title,
        item.org_oid,
        item.host,
        int(item.port),
        bool(item.tls),
        tuple(str(r) for r in item.roles or ()),
        item.description,
        tuple(str(a) for a in item.addresses or ()),
        tuple(str(n) for n in item.certificate_names or ()),
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
            certificate_names=list(org.certificate_names),
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

    def add_ae(self, ae: AEInfo, *, replace: bool = False) -> AEInfo:
        """Register ``ae``; returns it as registered (with its addresses resolved to networks)."""
        self.get_organisation(ae.org_oid)
        unknown = set(ae.roles) - set(ROLES)
        if unknown:
            raise ValueError(f"unknown roles {sorted(unknown)}; known: {', '.join(ROLES)}")
        if not 0 < len(ae.ae_title) <= 16:
            raise ValueError("AE title must be 1-16 characters")
        ae = with_fields(ae, addresses=resolve_networks(ae.addresses or (ae.host,)))
        item = ApplicationEntity(
            ae.ae_title,
            org_oid=ae.org_oid,
            host=ae.host,
            port=ae.port,
            tls=ae.tls,
            roles=list(ae.roles),
            description=ae.description,
            addresses=list(ae.addresses),
            certificate_names=list(ae.certificate_names),
        )
        try:
            item.save(condition=None if replace else ApplicationEntity.ae_title.does_not_exist())
        except PutError as exc:
            raise DuplicateEntry(f"AE {ae.ae_title} exists") from exc
        return ae

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
