"""The directory: organisations, AEs and HL7 sending facilities as the listeners' hot path sees them.

One read-through cache in front of the configuration tables, so a listener does one GetItem per AE
title, organisation or facility per ``ttl`` seconds, whatever the traffic. Unknown names are
remembered briefly only (``negative_ttl``), so a newly registered one is served at once. The names
are chosen by peers (calling AE titles, MSH-4), so each cache keeps at most ``max_entries`` (least
recently used out first): a peer cycling through names cannot grow the listener's memory.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

from archive.data.facilities import FacilityRepository
from archive.data.registry import Registry
from archive.errors import UnknownApplicationEntity, UnknownOrganisation
from archive.model.organisations import AEInfo, FacilityInfo, OrganisationInfo, SendingFacility

V = TypeVar("V")


MAX_ENTRIES = 4096


class _TtlCache(Generic[V]):
    """Name -> value (or None: not found), each kept for a while; at most ``max_entries`` names."""

    def __init__(self, ttl: float, negative_ttl: float, max_entries: int = MAX_ENTRIES) -> None:
        self._ttl = ttl
        self._negative_ttl = negative_ttl
        self._max_entries = max_entries
        self._lock = threading.Lock()
        self._items: OrderedDict[str, tuple[float, V | None]] = OrderedDict()

    def get(self, name: str, load: Callable[[str], V | None]) -> V | None:
        now = time.monotonic()
        with self._lock:
            hit = self._items.get(name)
            if hit and hit[0] > now:
                self._items.move_to_end(name)
                return hit[1]
        value = load(name)
        with self._lock:
            self._items[name] = (now + (self._ttl if value is not None else self._negative_ttl), value)
            self._items.move_to_end(name)
            while len(self._items) > self._max_entries:
                self._items.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._items)


class CachedRegistry:
    """Read-through cache in front of the registry (and the HL7 facilities) for the hot path."""

    def __init__(
        self,
        registry: Registry,
        facilities: FacilityRepository | None = None,
        ttl: float = 30.0,
        negative_ttl: float = 2.0,
    ) -> None:
        self._registry = registry
        self._facilities = facilities
        self._aes: _TtlCache[AEInfo] = _TtlCache(ttl, negative_ttl)
        self._orgs: _TtlCache[OrganisationInfo] = _TtlCache(ttl, negative_ttl)
        self._facility_items: _TtlCache[FacilityInfo] = _TtlCache(ttl, negative_ttl)

    def find_ae(self, ae_title: str) -> AEInfo | None:
        return self._aes.get(ae_title, self._load_ae)

    def organisation(self, oid: str) -> OrganisationInfo:
        value = self._orgs.get(oid, self._load_organisation)
        if value is None:
            raise UnknownOrganisation(oid)
        return value

    def sending_facility(self, name: str) -> SendingFacility | None:
        """MSH-4 (one of its components) -> a registered facility's organisation, or an organisation
        registered under that OID; None if neither."""
        facility = self._facility_items.get(name, self._facilities.get) if self._facilities else None
        try:
            if facility is not None:
                return SendingFacility(self.organisation(facility.org_oid), dict(facility.issuer_namespaces))
            return SendingFacility(self.organisation(name))
        except UnknownOrganisation:
            return None

    def _load_ae(self, ae_title: str) -> AEInfo | None:
        try:
            return self._registry.get_ae(ae_title)
        except UnknownApplicationEntity:
            return None

    def _load_organisation(self, oid: str) -> OrganisationInfo | None:
        try:
            return self._registry.get_organisation(oid)
        except UnknownOrganisation:
            return None
