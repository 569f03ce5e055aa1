"""Staged instances: received into the low-latency tier, still to be copied into the Object-Locked
bucket (docs/storage.md). Plain values, no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from archive.model.retention import ObjectLock


@dataclass(frozen=True)
class LockRequest:
    """One staged object to copy, as the listener received and acknowledged it."""

    key: str
    sha256: str  # hex, computed by the listener over the bytes it received
    size: int
    # The retention the locked copy gets (None: the bucket's default).
    lock: ObjectLock | None = None
    # The study (or its patient) is on legal hold: the locked copy is held from its PUT.
    legal_hold: bool = False

    def message(self) -> dict[str, Any]:
        body: dict[str, Any] = {"key": self.key, "sha256": self.sha256, "size": self.size}
        if self.legal_hold:
            body["legal_hold"] = True
        if self.lock is not None:
            body["lock_mode"] = self.lock.mode
            body["retain_until"] = self.lock.retain_until.isoformat()
        return body

    @classmethod
    def from_message(cls, body: dict[str, Any]) -> LockRequest:
        lock = None
        if body.get("lock_mode"):
            lock = ObjectLock(str(body["lock_mode"]), datetime.fromisoformat(str(body["retain_until"])))
        return cls(
            str(body["key"]), str(body["sha256"]), int(body["size"]), lock, bool(body.get("legal_hold"))
        )
