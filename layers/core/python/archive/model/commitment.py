"""Storage commitment values: what was asked to be committed, and what the archive answered."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

# Transaction states.
PENDING = "PENDING"
REPORTED = "REPORTED"
UNDELIVERABLE = "UNDELIVERABLE"

# One transaction is recorded in one DynamoDB transaction (all or nothing, so a request is either
# wholly recorded or refused): at most 100 items and 4 MB. Slices of 1,000 references are at most
# ~71 KB even with 64-character UIDs (archive.data.commitments), so 40 slices stay well inside both.
MAX_REFERENCES = 40_000

COMMITTED = 0  # an outcome: the instance is committed; any other outcome is its Failure Reason


@dataclass(frozen=True)
class Reference:
    sop_class_uid: str
    sop_instance_uid: str


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

    def outcomes(self, references: Sequence[Reference]) -> list[int]:
        """One outcome per reference, in request order: COMMITTED or the Failure Reason."""
        by_ref = {ref: COMMITTED for ref in self.committed}
        by_ref.update(dict(self.failed))
        return [by_ref[ref] for ref in references]

    @classmethod
    def from_outcomes(cls, references: Sequence[Reference], outcomes: Sequence[int]) -> CommitmentResult:
        if len(references) != len(outcomes):
            raise ValueError(f"{len(outcomes)} outcomes for {len(references)} references")
        result = cls()
        for ref, outcome in zip(references, outcomes, strict=True):
            if outcome == COMMITTED:
                result.committed.append(ref)
            else:
                result.failed.append((ref, int(outcome)))
        return result


@dataclass(frozen=True)
class CommitmentTransaction:
    """A storage commitment transaction as recorded: who asked, and how far it got.

    The references and the frozen outcome are read separately (a transaction can hold 40,000).
    """

    transaction_uid: str
    requester_ae: str
    org_oid: str
    state: str
    reference_count: int
    deadline_at: float
    received_at: datetime | None = None
    # Listener task that received the N-ACTION (the only one that can answer on its association).
    origin: str | None = None
    attempts: int = 0
    result_saved: bool = False  # the outcome is frozen once settled
    committed_count: int | None = None
    failed_count: int | None = None
    last_error: str | None = None
    reported_on: str | None = None
    reported_at: datetime | None = None
    undeliverable_at: float | None = None

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("received_at", "reported_at"):
            if out[key] is not None:
                out[key] = out[key].isoformat()
        return out
