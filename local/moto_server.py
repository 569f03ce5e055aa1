"""moto's server as the local cloud runs it (``python -m local.moto_server``), with one change.

moto rolls a DynamoDB transaction back by deep-copying every table the transaction touches before
it starts. That costs time in proportion to the tables' size: with a few thousand history items a
TransactWriteItems took 0.6 s on this machine, and a queue of HL7 changes drained at about one
message a second, far slower than one Lambda against DynamoDB. Here the transaction keeps a copy
of the items it touches instead, and puts exactly those back if it is cancelled, which is what the
rollback has to undo.

It also adds one endpoint, ``POST /moto-api/archive/storage-class``, the stand-in for an S3
lifecycle transition (docs/storage.md, "Local simulation"): it changes the storage class of one
existing object version in place, as a lifecycle rule does on AWS (same version, bytes, checksum
and Object Lock), and forgets any restored copy. moto then refuses GETs of a DEEP_ARCHIVE or GLACIER
version until RestoreObject, as S3 does. Everything else is moto as installed.
"""

from __future__ import annotations

import copy
import json
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


STORAGE_CLASS_PATH = "/moto-api/archive/storage-class"


def _set_storage_class(request: Any, full_url: str, headers: Any) -> tuple[int, dict[str, str], str]:
    """Body: {"bucket", "key", "version_id" (optional), "storage_class"}; answers the version."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    body = json.loads(request.data or b"{}")
    backend = s3_backends[body.get("account_id", DEFAULT_ACCOUNT_ID)]["aws"]
    key = backend.get_object(body["bucket"], body["key"], version_id=body.get("version_id"))
    if key is None:
        return 404, {}, json.dumps({"error": "no such object version"})
    key.set_storage_class(body["storage_class"])
    key.set_expiry(None)  # a transition leaves no restored copy behind
    key.status = None  # type: ignore[assignment]
    return 200, {"Content-Type": "application/json"}, json.dumps({"version_id": key.version_id})


def install_lifecycle_endpoint() -> None:
    from moto.moto_api._internal import urls

    urls.url_paths["{0}" + STORAGE_CLASS_PATH] = _set_storage_class


def main() -> None:
    install()
    install_lifecycle_endpoint()
    from moto.server import main as moto_main

    moto_main()


if __name__ == "__main__":
    main()
