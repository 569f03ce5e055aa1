"""Mapping archive errors to DIMSE statuses: shared by the storage and query/retrieve services."""

from __future__ import annotations

from collections.abc import Sequence

from archive.errors import ArchiveError
from pydicom.dataset import Dataset

StatusTable = Sequence[tuple[type[ArchiveError], int]]


def status_for(exc: Exception, table: StatusTable, default: int) -> int:
    """The status of the first error type in ``table`` that ``exc`` is an instance of."""
    for error_type, status in table:
        if isinstance(exc, error_type):
            return status
    return default


def status_dataset(code: int, comment: str | None = None) -> Dataset:
    """A status dataset for a pynetdicom handler, with an optional Error Comment."""
    ds = Dataset()
    ds.Status = code
    if comment:
        # Error Comment is LO: 64 characters at most.
        ds.ErrorComment = comment[:64]
    return ds
