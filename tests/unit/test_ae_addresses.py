"""An AE is admitted only from the networks registered for it (issue 8 section 4)."""

from __future__ import annotations

import pytest
from archive.data.registry import resolve_networks
from archive.model.organisations import AEInfo


def _ae(*addresses: str) -> AEInfo:
    return AEInfo("MOD", "1.2.3", "pacs.example", 104, addresses=addresses)


def test_admits_addresses_inside_its_networks_only() -> None:
    ae = _ae("127.0.0.1/32", "10.1.2.0/28", "2001:db8::/64")
    assert ae.admits("127.0.0.1")
    assert ae.admits("10.1.2.15")
    assert ae.admits("2001:db8::7")
    assert not ae.admits("127.0.0.2")
    assert not ae.admits("10.1.2.16")


def test_an_ipv4_peer_seen_on_a_dual_stack_socket_is_matched_as_ipv4() -> None:
    assert _ae("192.0.2.7/32").admits("::ffff:192.0.2.7")


@pytest.mark.parametrize("address", ["", "not-an-address", "999.1.1.1"])
def test_an_unreadable_peer_address_is_not_admitted(address: str) -> None:
    assert not _ae("0.0.0.0/0").admits(address)


def test_an_ae_without_addresses_admits_no_one() -> None:
    assert not _ae().admits("127.0.0.1")


def test_registration_turns_addresses_and_networks_into_networks() -> None:
    assert resolve_networks(["192.0.2.7", " 10.1.2.3/28", "2001:db8::1"]) == (
        "192.0.2.7/32",
        "10.1.2.0/28",
        "2001:db8::1/128",
    )


def test_registration_resolves_host_names_once() -> None:
    # localhost comes from the hosts file: no DNS query
    assert "127.0.0.1/32" in resolve_networks(["localhost"])


def test_registration_needs_an_address() -> None:
    with pytest.raises(ValueError, match="no address"):
        resolve_networks([])
