"""Caches keyed by names a peer chooses (calling AE titles, MSH-4) stay bounded."""

from __future__ import annotations

from archive.services.cache import TtlCache


def test_cache_keeps_at_most_its_size_evicting_the_least_recently_used() -> None:
    # Given a cache of 100 names and a peer presenting 10,000 distinct unknown AE titles
    cache: TtlCache[str, str] = TtlCache(ttl=60, negative_ttl=60, max_entries=100)
    loads: list[str] = []

    def load(name: str) -> str | None:
        loads.append(name)
        return "known" if name == "KNOWN_AE" else None

    cache.get("KNOWN_AE", load)
    for n in range(10_000):
        assert cache.get(f"PROBE_{n}", load) is None
        if n % 50 == 0:
            assert cache.get("KNOWN_AE", load) == "known"  # in use: stays cached
    # Then it holds 100 names, the one in use among them (loaded once), the oldest probes gone
    assert len(cache) == 100
    assert loads.count("KNOWN_AE") == 1
    cache.get("PROBE_0", load)
    assert loads.count("PROBE_0") == 2


def test_unknown_names_expire_quickly() -> None:
    cache: TtlCache[str, str] = TtlCache(ttl=60, negative_ttl=0)
    loads: list[str] = []
    cache.get("NEW_AE", lambda n: loads.append(n))  # type: ignore[func-returns-value]
    cache.get("NEW_AE", lambda n: loads.append(n))  # type: ignore[func-returns-value]
    assert loads == ["NEW_AE", "NEW_AE"]
