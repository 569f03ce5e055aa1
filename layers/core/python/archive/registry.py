"""The configuration registry: customer organisations and their DICOM application entities.

Lives in DynamoDB, managed by the admin CLI (``python -m archive.admin``). Lookups on the hot path
(association acceptance, C-STORE validation) go through a short-lived cache so a listener does one
GetItem per AE title per ``ttl`` seconds, whatever the traffic.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Generic, TypeVar

from pynamodb.exceptions import DoesNotExist, PutError

from archive.data.models import ApplicationEntity, Organisation
from archive.errors import DuplicateEntry, UnknownApplicationEntity, UnknownOrganisation

ROLES = ("store", "query", "retrieve", "commitment", "ian", "move-destination")


@dataclass(frozen=True)
class OrganisationInfo:
    oid: str
    name: str
    trusted_issuers: tuple[str, ...] = ()
    default_issuer: str | None = None


@dataclass(frozen=True)
class AEInfo:
    ae_title: str
    org_oid: str
    host: str
    port: int
    tls: bool = False
    roles: tuple[str, ...] = field(default_factory=tuple)
    description: str | None = None


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


K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
MISS = object()


class LookupCache(Generic[K, V]):
    """Expiring lookups keyed by names a peer chooses (calling AE titles, MSH-4), bounded in size.

    A peer can present any number of distinct names (each unknown title is remembered briefly, as a
    miss); beyond ``max_entries`` the least recently used entry goes, so memory stays bounded
    whatever arrives. Thread-safe.
    """

    def __init__(self, max_entries: int = 4096) -> None:
        self._max = max_entries
        self._lock = threading.Lock()
        self._items: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def get(self, key: K, now: float) -> V | object:
        """The cached value, or ``MISS`` when absent or expired."""
        with self._lock:
            hit = self._items.get(key)
            if hit is None or hit[0] <= now:
                return MISS
            self._items.move_to_end(key)
            return hit[1]

    def put(self, key: K, value: V, expires_at: float) -> None:
        with self._lock:
            self._items[key] = (expires_at, value)
            self._items.move_to_end(key)
            while len(self._items) > self._max:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


class CachedRegistry:
    """Read-through cache in front of the registry for the listeners' hot path."""

    def __init__(self, registry: Registry, ttl: float = 30.0, negative_ttl: float = 2.0) -> None:
        self._registry = registry
        self._ttl = ttl
        # Unknown titles are remembered briefly only, so a newly registered AE is served at once.
        self._negative_ttl = negative_ttl
        # Keyed by whatever calling AE title a peer presents: bounded.
        self._aes: LookupCache[str, AEInfo | None] = LookupCache()
        self._orgs: LookupCache[str, OrganisationInfo] = LookupCache()

    def find_ae(self, ae_title: str) -> AEInfo | None:
        now = time.monotonic()
        hit = self._aes.get(ae_title, now)
        if hit is not MISS:
            return hit  # type: ignore[return-value]
        try:
            value: AEInfo | None = self._registry.get_ae(ae_title)
        except UnknownApplicationEntity:
            value = None
        self._aes.put(ae_title, value, now + (self._ttl if value else self._negative_ttl))
        return value

    def organisation(self, oid: str) -> OrganisationInfo:
        now = time.monotonic()
        hit = self._orgs.get(oid, now)
        if hit is not MISS:
            return hit  # type: ignore[return-value]
        value = self._registry.get_organisation(oid)
        self._orgs.put(oid, value, now + self._ttl)
        return value
