"""moto's server as the local cloud runs it (``python -m local.moto_server``), with these changes.

It is served by cheroot, which keeps HTTP/1.1 connections open, instead of werkzeug's development
server, which closes every one (``--http-server werkzeug`` brings that back for comparison).

moto rolls a DynamoDB transaction back by deep-copying every table the transaction touches before
it starts. That costs time in proportion to the tables' size: with a few thousand history items a
TransactWriteItems took 0.6 s on this machine, and a queue of HL7 changes drained at about one
message a second, far slower than one Lambda against DynamoDB. Here the transaction keeps a copy
of the items it touches instead, and puts exactly those back if it is cancelled, which is what the
rollback has to undo.

With ``--data-dir`` the server keeps its state in that directory across a stop and a start
(``local.moto_state``): loaded before it answers, saved every ``--save-every`` seconds when
something changed, and on SIGTERM/SIGINT.

moto answers a DynamoDB Query by walking every item of the table, for the table's own key as for a
secondary index, so a C-FIND or an ITI-18 query took longer the more the archive held (about
0.4 s at 10,000 studies, several seconds at 100,000), where DynamoDB reads only the partition asked
for. Here a Query on the table's key is handed only that partition's items, and one on a
secondary index only the items with the asked-for index key, from a map of the index built on the
first query after the table last changed. moto's own matching, sorting, paging, filtering and
counting then run unchanged over those items, so the answer is the one moto gives.

moto asks for the current time as a datetime and converts it to epoch seconds again for every
SQS message it looks at, and an SQS SendMessage or ReceiveMessage looks at every message in the
queue several times (its attribute counts); the clock readings were two thirds of moto's CPU in an
SQS send and receive loop. Here the same readings come from ``time.time()``.

It also adds one endpoint, ``POST /moto-api/archive/storage-class``, the stand-in for an S3
lifecycle transition (docs/storage.md, "Local simulation"): it changes the storage class of one
existing object version in place, as a lifecycle rule does on AWS (same version, bytes, checksum
and Object Lock), and forgets any restored copy. moto then refuses GETs of a DEEP_ARCHIVE or GLACIER
version until RestoreObject, as S3 does. Everything else is moto as installed.
"""

from __future__ import annotations

import argparse
import contextlib
import contextvars
import copy
import inspect
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
from moto.dynamodb.models.dynamo_type import Item
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


def install_fast_clock() -> None:
    """moto's ``unix_time``, ``unix_time_millis`` and ``utcnow`` with the same results, cheaper:
    replaced in moto.core.utils (for modules imported later) and wherever loaded moto modules
    imported them by name."""
    import datetime as dt

    from moto.core import utils

    originals = {name: getattr(utils, name) for name in ("unix_time", "unix_time_millis", "utcnow")}

    def unix_time(value: dt.datetime | None = None) -> float:
        return time.time() if value is None else originals["unix_time"](value)

    def unix_time_millis(value: dt.datetime | None = None) -> float:
        return time.time() * 1000.0 if value is None else originals["unix_time_millis"](value)

    def utcnow() -> dt.datetime:
        return dt.datetime.now(dt.UTC).replace(tzinfo=None)

    faster = {"unix_time": unix_time, "unix_time_millis": unix_time_millis, "utcnow": utcnow}
    for module in [m for name, m in list(sys.modules.items()) if name == "moto" or name.startswith("moto.")]:
        for name, function in faster.items():
            if getattr(module, name, None) is originals[name]:
                setattr(module, name, function)


def install() -> None:
    install_fast_clock()
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


# --- Query reads only the partition asked for -----------------------------------------------

# The items a Table.query running in this thread (or request context) may match, set around moto's
# own query, which gets them from all_items().
_NARROWED: contextvars.ContextVar[tuple[Table, list[Item]] | None] = contextvars.ContextVar(
    "narrowed", default=None
)
# Per table (by identity): how often it changed, and per secondary index the map built at a change
# count: index key values -> items. A change bumps the count; the next query rebuilds the map.
_CHANGES: dict[int, tuple[Table, int]] = {}
_INDEX_MAPS: dict[tuple[int, str], tuple[Table, int, dict[tuple[Any, ...], list[Item]]]] = {}
_MAPS_LOCK = threading.Lock()


def _changed(table: Table) -> None:
    with _MAPS_LOCK:
        held = _CHANGES.get(id(table))
        count = held[1] + 1 if held is not None and held[0] is table else 1
        _CHANGES[id(table)] = (table, count)


def _change_count(table: Table) -> int:
    held = _CHANGES.get(id(table))
    return held[1] if held is not None and held[0] is table else 0


def _partition(table: Table, hash_key: Any) -> list[Item]:
    found: Any = table.items.get(hash_key)  # .get: the defaultdict must not grow an empty partition
    if found is None:
        return []
    return list(found.values()) if table.range_key_attr else [found]


def _index_map(
    table: Table, index_name: str, hash_attrs: list[str]
) -> dict[tuple[Any, ...], list[Item]] | None:
    count = _change_count(table)
    held = _INDEX_MAPS.get((id(table), index_name))
    if held is not None and held[0] is table and held[1] == count:
        return held[2]
    for _ in range(3):
        try:
            everything = table.all_items()
            break
        except RuntimeError:  # a write changed the table's dict while it was walked: again
            continue
    else:
        return None
    built: dict[tuple[Any, ...], list[Item]] = {}
    for item in everything:
        values = tuple(item.attrs.get(name) for name in hash_attrs)
        if any(value is None for value in values):
            continue  # not in the index
        try:
            built.setdefault(values, []).append(item)
        except TypeError:  # not a key type: moto's own walk decides
            return None
    with _MAPS_LOCK:
        _INDEX_MAPS[(id(table), index_name)] = (table, count, built)
    return built


def _candidates(table: Table, hash_key: Any, index_name: str | None, conditions: Any) -> list[Item] | None:
    """The items a query can match, or None where moto's walk of every item must decide."""
    if not index_name:
        return None if hash_key is None else _partition(table, hash_key)
    index = {i.name: i for i in table.all_indexes()}.get(index_name)
    if index is None:
        return None  # moto answers with its own error
    hash_attrs = [key["AttributeName"] for key in index.schema if key["KeyType"] == "HASH"]
    asked = dict(conditions or [])
    if not hash_attrs or set(asked) != set(hash_attrs):
        return None
    mapped = _index_map(table, index_name, hash_attrs)
    if mapped is None:
        return None
    return list(mapped.get(tuple(asked[name] for name in hash_attrs), []))


def install_partition_queries() -> None:
    original_query = Table.query
    original_all_items = Table.all_items
    original_put = Table.put_item
    original_delete = Table.delete_item
    original_update = DynamoDBBackend.update_item
    original_update_table = DynamoDBBackend.update_table
    signature = inspect.signature(original_query)

    def query(self: Table, *args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(self, *args, **kwargs).arguments
        candidates = _candidates(
            self, bound.get("hash_key"), bound.get("index_name"), bound.get("hash_key_conditions")
        )
        if candidates is None:
            return original_query(self, *args, **kwargs)
        token = _NARROWED.set((self, candidates))
        try:
            return original_query(self, *args, **kwargs)
        finally:
            _NARROWED.reset(token)

    def all_items(self: Table) -> list[Item]:
        narrowed = _NARROWED.get()
        if narrowed is not None and narrowed[0] is self:
            return list(narrowed[1])
        return original_all_items(self)

    def put_item(self: Table, *args: Any, **kwargs: Any) -> Any:
        try:
            return original_put(self, *args, **kwargs)
        finally:
            _changed(self)

    def delete_item(self: Table, *args: Any, **kwargs: Any) -> Any:
        try:
            return original_delete(self, *args, **kwargs)
        finally:
            _changed(self)

    def _changing(original: Any) -> Any:
        # update_item changes an item in place (and update_table may add an index): the table's
        # maps are stale once it returns, whatever it did.
        def changing(self: DynamoDBBackend, table_name: str, *args: Any, **kwargs: Any) -> Any:
            try:
                return original(self, table_name, *args, **kwargs)
            finally:
                with contextlib.suppress(Exception):  # no such table: nothing to forget
                    _changed(self.get_table(table_name))

        return changing

    Table.query = query  # type: ignore[method-assign]
    Table.all_items = all_items  # type: ignore[method-assign]
    Table.put_item = put_item  # type: ignore[method-assign]
    Table.delete_item = delete_item  # type: ignore[method-assign]
    DynamoDBBackend.update_item = _changing(original_update)  # type: ignore[method-assign]
    DynamoDBBackend.update_table = _changing(original_update_table)  # type: ignore[method-assign]


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


# cheroot: worker threads (a long-polling SQS receive holds one for its wait; the GIL serialises the
# rest anyway; cheroot adds threads up to the maximum as connections wait), and how long an idle
# kept-alive connection is held.
CHEROOT_THREADS = 16
CHEROOT_MAX_THREADS = 256
CHEROOT_IDLE_SECONDS = 300
# cheroot copies what is left of a piece of the response on every partial socket write, so a
# piece of n bytes costs O(n^2): a 512 MB GetObject answered as one piece took 24 s instead of
# 0.7 s. Pieces are handed to it at most this large.
RESPONSE_PIECE = 1024 * 1024


def _in_pieces(app: Any) -> Any:
    """The WSGI application, its response bodies in pieces of at most RESPONSE_PIECE bytes."""

    def pieces(body: Any) -> Any:
        try:
            for part in body:
                if len(part) <= RESPONSE_PIECE:
                    yield part
                    continue
                view = memoryview(part)
                for start in range(0, len(view), RESPONSE_PIECE):
                    yield view[start : start + RESPONSE_PIECE].tobytes()
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()

    def application(environ: dict[str, Any], start_response: Any) -> Any:
        return pieces(app(environ, start_response))

    return application


def _serve_cheroot(app: Any, host: str, port: int) -> None:
    """moto's WSGI application behind cheroot (CherryPy's server): HTTP/1.1 with keep-alive, where
    werkzeug's development server answers every request with ``Connection: close`` (a new TCP
    connection, and a new server thread, for every call of every client; docs/local-cloud.md has
    the figures). cheroot sends response header names as moto spells them (S3 answers user metadata
    in lower case, and boto3 keeps the case it is sent: waitress, which capitalises them, changed
    ``patient-key`` into ``Patient-Key``)."""
    from cheroot.wsgi import Server

    server = Server(
        (host, port),
        _in_pieces(app),
        numthreads=CHEROOT_THREADS,
        max=CHEROOT_MAX_THREADS,
        timeout=CHEROOT_IDLE_SECONDS,
        request_queue_size=1024,
        server_name="moto",
    )
    try:
        server.start()
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="moto server for the local cloud")
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=4566)
    parser.add_argument("--data-dir", type=Path, help="keep the state here across restarts")
    parser.add_argument("--save-every", type=float, default=10.0, help="seconds between saves")
    parser.add_argument(
        "--http-server",
        choices=("cheroot", "werkzeug"),
        default="cheroot",
        help="cheroot keeps connections open (HTTP/1.1); werkzeug (moto's own) closes each one",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    install()
    install_partition_queries()
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
        if args.http_server == "cheroot":
            _serve_cheroot(app, args.host, args.port)
        else:
            run_simple(args.host, args.port, app, threaded=True, request_handler=MotoRequestHandler)
    finally:
        if state is not None:
            state.stop()


if __name__ == "__main__":
    main()
