"""Customer organisations, their DICOM application entities and their HL7 sending facilities."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field

ROLES = ("store", "query", "retrieve", "commitment", "ian", "move-destination")


@dataclass(frozen=True)
class OrganisationInfo:
    oid: str
    name: str
    trusted_issuers: tuple[str, ...] = ()
    default_issuer: str | None = None
    # Names that identify the organisation's certificates when they carry no urn:oid of it.
    certificate_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class AEInfo:
    ae_title: str
    org_oid: str
    host: str
    port: int
    tls: bool = False
    roles: tuple[str, ...] = field(default_factory=tuple)
    description: str | None = None
    # Networks (CIDR) an association from this AE may come from. Registration fills it from the
    # addresses given, or else from ``host``, host names resolved then; empty admits no one.
    addresses: tuple[str, ...] = ()
    # If set, the node's certificate must carry one of these names (archive.model.certificates).
    certificate_names: tuple[str, ...] = ()

    def admits(self, address: str) -> bool:
        """Whether a connection from ``address`` (the peer's IP) may act as this AE."""
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in ipaddress.ip_network(network) for network in self.addresses)


@dataclass(frozen=True)
class FacilityInfo:
    facility: str
    org_oid: str
    issuer_namespaces: Mapping[str, str]


@dataclass(frozen=True)
class SendingFacility:
    """An HL7 sender (MSH-4) resolved to its organisation and the namespaces it uses."""

    org: OrganisationInfo
    issuer_namespaces: dict[str, str] = field(default_factory=dict)
