"""The directory: organisations, AEs and HL7 sending facilities as the listeners' hot path sees them.

One read-through cache in front of the configuration tables, so a listener does one GetItem per AE
title, organisation or facility per ``ttl`` seconds, whatever the traffic. Unknown names are
remembered briefly only (``negative_ttl``), so a newly registered one is served at once. The names
are chosen by peers (calling AE titles, MSH-4), so each cache keeps at most ``max_entries`` (least
recently used out first): a peer cycling through names cannot grow the listener's memory.
"""

from __future__ import annotations

from archive.data.facilities import FacilityRepository
from archive.data.registry import Registry
from archive.errors import UnknownApplicationEntity, UnknownOrganisation
from archive.model.organisations import AEInfo, FacilityInfo, OrganisationInfo, SendingFacility
from archive.services.cache import TtlCache


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
        self._aes: TtlCache[str, AEInfo] = TtlCache(ttl, negative_ttl)
        self._orgs: TtlCache[str, OrganisationInfo] = TtlCache(ttl, negative_ttl)
        self._facility_items: TtlCache[str, FacilityInfo] = TtlCache(ttl, negative_ttl)

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
