"""Data access for HL7 sending facilities (MSH-4) and the identifier namespaces each one uses."""

from __future__ import annotations

from datetime import UTC, datetime

from pynamodb.exceptions import DoesNotExist, PutError

from archive.data.models import HL7Facility
from archive.errors import DuplicateEntry, UnknownSendingFacility
from archive.model.organisations import FacilityInfo


class FacilityRepository:
    """HL7 sending facilities (MSH-4) and the identifier namespaces each one uses."""

    def add(self, info: FacilityInfo, *, replace: bool = False) -> None:
        item = HL7Facility(
            info.facility,
            org_oid=info.org_oid,
            issuer_namespaces=dict(info.issuer_namespaces),
            created_at=datetime.now(UTC),
        )
        try:
            item.save(condition=None if replace else HL7Facility.facility.does_not_exist())
        except PutError as exc:
            raise DuplicateEntry(f"HL7 facility {info.facility} exists") from exc

    def get(self, facility: str) -> FacilityInfo | None:
        try:
            item = HL7Facility.get(facility)
        except DoesNotExist:
            return None
        return FacilityInfo(item.facility, item.org_oid, dict(item.issuer_namespaces or {}))

    def list(self) -> list[FacilityInfo]:
        # Admin listing of a small configuration table; never on a request path.
        return [
            FacilityInfo(i.facility, i.org_oid, dict(i.issuer_namespaces or {})) for i in HL7Facility.scan()
        ]

    def remove(self, facility: str) -> None:
        try:
            HL7Facility.get(facility).delete()
        except DoesNotExist as exc:
            raise UnknownSendingFacility(facility) from exc
