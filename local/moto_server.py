"""moto's server as the local cloud runs it (``python -m local.moto_server``), with one change.

moto rolls a DynamoDB transaction back by deep-copying every table the transaction touches before
it starts. That costs time in proportion to the tables' size: with a few thousand history items a
TransactWriteItems took 0.6 s on this machine, and a queue of HL7 changes drained at about one
message a second, far slower than one Lambda against DynamoDB. Here the transaction keeps a copy
of the items it touches instead, and puts exactly those back if it is cancelled, which is what the
rollback has to undo. Everything else is moto as installed.
"""

from __future__ import annotations

import copy
import threading
from typing import Any

from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.table import Table

_IN_TRANSACTION = threading.local()


def _table_deepcopy(self: Table, memo: dict[int, Any]) -> Table:
    if getattr(_IN_TRANSACTION, "active", False):
        return self  # the transaction's own whole-table backup: replaced by the item snapshots
    clone: Any = self.__class__.__new__(self.__class__)
    memo[id(self)] = clone
    for name, value in self.__dict__.items():
        setattr(clone, name, copy.deepcopy(value, memo))
    return clone


def _key(backend: DynamoDBBackend, op_type: str, op: dict[str, Any]) -> dict[str, Any]:
    if op_type != "Put":
        return dict(op["Key"])
    table = backend.get_table(op["TableName"])
    key = {table.hash_key_attr: op["Item"][table.hash_key_attr]}
    if table.range_key_attr is not None:
        key[table.range_key_attr] = op["Item"][table.range_key_attr]
    return key


def _snapshot(
    backend: DynamoDBBackend, transact_items: list[dict[str, Any]]
) -> list[tuple[str, dict[str, Any], Any]]:
    snapshots = []
    for item in transact_items:
        try:
            op_type, op = next(iter(item.items()))
            key = _key(backend, op_type, op)
            current = backend.get_item(op["TableName"], key)
        except Exception:  # noqa: S112 - a malformed item: moto's own handling raises the right error
            continue
        snapshots.append((op["TableName"], key, copy.deepcopy(current)))
    return snapshots


def _restore(backend: DynamoDBBackend, snapshots: list[tuple[str, dict[str, Any], Any]]) -> None:
    for table_name, key, item in reversed(snapshots):
        if item is None:
            if backend.get_item(table_name, key) is not None:
                backend.delete_item(table_name, key)
        else:
            backend.put_item(table_name, item.to_json()["Attributes"])


def install() -> None:
    original = DynamoDBBackend.transact_write_items

    def transact_write_items(self: DynamoDBBackend, transact_items: list[dict[str, Any]]) -> None:
        snapshots = _snapshot(self, transact_items)
        _IN_TRANSACTION.active = True
        try:
            original(self, transact_items)
        except Exception:
            _restore(self, snapshots)
            raise
        finally:
            _IN_TRANSACTION.active = False

    Table.__deepcopy__ = _table_deepcopy  # type: ignore[attr-defined]
    DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]


def main() -> None:
    install()
    from moto.server import main as moto_main

    moto_main()


if __name__ == "__main__":
    main()
