"""A small read-through cache for hot paths: each key's value kept for a while, at most
``max_entries`` keys (least recently used out first), so keys a peer chooses cannot grow memory."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

MAX_ENTRIES = 4096


class TtlCache(Generic[K, V]):
    """Key -> value (or None: not found), kept ``ttl`` seconds (``negative_ttl`` for None)."""

    def __init__(self, ttl: float, negative_ttl: float | None = None, max_entries: int = MAX_ENTRIES) -> None:
        self._ttl = ttl
        self._negative_ttl = ttl if negative_ttl is None else negative_ttl
        self._max_entries = max_entries
        self._lock = threading.Lock()
        self._items: OrderedDict[K, tuple[float, V | None]] = OrderedDict()

    def get(self, key: K, load: Callable[[K], V | None]) -> V | None:
        now = time.monotonic()
        with self._lock:
            hit = self._items.get(key)
            if hit and hit[0] > now:
                self._items.move_to_end(key)
                return hit[1]
        value = load(key)
        with self._lock:
            self._items[key] = (now + (self._ttl if value is not None else self._negative_ttl), value)
            self._items.move_to_end(key)
            while len(self._items) > self._max_entries:
                self._items.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._items)
