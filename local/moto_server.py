"""moto's server as the local cloud runs it (``python -m local.moto_server``), with three changes.

moto rolls a DynamoDB transaction back by deep-copying every table the transaction touches before
it starts. That costs time in proportion to the tables' size: with a few thousand history items a
TransactWriteItems took 0.6 s on this machine, and a queue of HL7 changes drained at about one
message a second, far slower than one Lambda against DynamoDB. Here the transaction keeps a copy
of the items it touches instead, and puts exactly those back if it is cancelled, which is what the
rollback has to undo.

With ``--data-dir`` the server keeps its state in that directory across a stop and a start
(``local.moto_state``): loaded before it answers, saved every ``--save-every`` seconds when
something changed, and on SIGTERM/SIGINT.

It also adds one endpoint, ``POST /moto-api/archive/storage-class``, the stand-in for an S3
lifecycle transition (docs/storage.md, "Local simulation"): it changes the storage class of one
existing object version in place, as a lifecycle rule does on AWS (same version, bytes, checksum
and Object Lock), and forgets any restored copy. moto then refuses GETs of a DEEP_ARCHIVE or GLACIER
version until RestoreObject, as S3 does. Everything else is moto as installed.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.table import Table

LOG = logging.getLogger("archive.local.moto_server")
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="moto server for the local cloud")
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=4566)
    parser.add_argument("--data-dir", type=Path, help="keep the state here across restarts")
    parser.add_argument("--save-every", type=float, default=10.0, help="seconds between saves")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    install()
    install_lifecycle_endpoint()
    os.environ.setdefault("MOTO_PORT", str(args.port))
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import run_simple

    app: Any = DomainDispatcherApplication(create_backend_app)
    app.debug = True  # as moto's own main sets it
    state = None
    if args.data_dir is not None:
        from . import moto_state

        started = time.monotonic()
        try:
            loaded = moto_state.load(args.data_dir)
        except Exception:
            # A state saved by another moto version may not load; say so rather than start empty
            # and overwrite it.
            LOG.exception(
                "cannot load the state in %s; start afresh with python -m local --fresh", args.data_dir
            )
            sys.exit(2)
        if loaded:
            LOG.info("loaded the state from %s in %.2f s", args.data_dir, time.monotonic() - started)
        state = moto_state.PersistentState(args.data_dir, args.save_every)
        app = state.wrap(app)
        state.start()

    def stop(*_: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        run_simple(args.host, args.port, app, threaded=True, request_handler=MotoRequestHandler)
    finally:
        if state is not None:
            state.stop()


if __name__ == "__main__":
    main()
