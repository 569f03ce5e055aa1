"""Caches keyed by names a peer chooses (calling AE titles, MSH-4) stay bounded."""

from __future__ import annotations

from archive.registry import MISS, LookupCache


def test_cache_keeps_at_most_its_size_evicting_the_least_recently_used() -> None:
    # Given a cache of 100 entries and a peer presenting 10,000 distinct unknown AE titles
    cache: LookupCache[str, None] = LookupCache(max_entries=100)
    cache.put("KNOWN_AE", None, expires_at=1e9)
    for n in range(10_000):
        cache.put(f"PROBE_{n}", None, expires_at=1e9)
        if n % 50 == 0:
            assert cache.get("KNOWN_AE", now=0.0) is None  # in use: stays
    # Then it holds 100 entries, the one in use among them, the oldest probes gone
    assert len(cache) == 100
    assert cache.get("KNOWN_AE", now=0.0) is None
    assert cache.get("PROBE_0", now=0.0) is MISS
    assert cache.get("PROBE_9999", now=0.0) is None


def test_expired_entries_are_misses() -> None:
    cache: LookupCache[str, str] = LookupCache()
    cache.put("AE", "value", expires_at=10.0)
    assert cache.get("AE", now=9.9) == "value"
    assert cache.get("AE", now=10.0) is MISS
