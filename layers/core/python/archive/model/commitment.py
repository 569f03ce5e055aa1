"""Storage commitment values: what was asked to be committed, and what the archive answered."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Reference:
    sop_class_uid: str
    sop_instance_uid: str

    def as_json(self) -> dict[str, str]:
        return {"sop_class_uid": self.sop_class_uid, "sop_instance_uid": self.sop_instance_uid}

    @classmethod
    def from_json(cls, value: dict[str, str]) -> Reference:
        return cls(value["sop_class_uid"], value["sop_instance_uid"])


@dataclass(frozen=True)
class CommitmentRequest:
    transaction_uid: str
    references: tuple[Reference, ...]


@dataclass
class CommitmentResult:
    committed: list[Reference] = field(default_factory=list)
    failed: list[tuple[Reference, int]] = field(default_factory=list)
    unsettled: list[Reference] = field(default_factory=list)

    @property
    def settled(self) -> bool:
        return not self.unsettled

    def as_json(self) -> dict[str, Any]:
        return {
            "committed": [r.as_json() for r in self.committed],
            "failed": [{**r.as_json(), "reason": reason} for r, reason in self.failed],
        }

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> CommitmentResult:
        return cls(
            committed=[Reference.from_json(r) for r in value.get("committed", [])],
            failed=[(Reference.from_json(r), int(r["reason"])) for r in value.get("failed", [])],
        )


@dataclass(frozen=True)
class CommitmentTransaction:
    """A storage commitment transaction as recorded: who asked, for what, and how far it got."""

    transaction_uid: str
    requester_ae: str
    org_oid: str
    references: tuple[Reference, ...]
    state: str
    deadline_at: float
    attempts: int = 0
    result: CommitmentResult | None = None  # frozen once settled
