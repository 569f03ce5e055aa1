"""Keeps the local stand-in's data across a stop and a start: moto's backends saved to a directory.

moto holds S3, DynamoDB, SQS and Secrets Manager as Python objects in memory. The state is saved
as one pickle of those backends (``state.pickle``, written to a temporary file and renamed, so a
crash mid-save leaves the previous state intact), except the S3 object bodies: each body is
written once to ``objects/`` and the pickle refers to it by name, so a save costs about the
metadata plus the bodies stored since the last save, not the whole archive again. Bodies no
longer referenced (destroyed objects) are removed after a save.

What survives is the stand-in's whole state, as AWS would keep it: objects with their versions,
Object Lock retention and legal holds; table items and indexes; queued messages (including those
in flight, which reappear when their visibility timeout ends, and delayed ones); secrets.
"""

from __future__ import annotations

import io
import logging
import os
import pickle
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from moto.core.base_backend import BackendDict, BaseBackend
from moto.s3.models import FakeKey
from moto.s3.utils import _VersionedKeyStore

LOG = logging.getLogger("archive.local.moto_state")

STATE_FILE = "state.pickle"
OBJECTS_DIR = "objects"
# Set on a FakeKey once its body is in the objects directory (the body of a key never changes
# after it is created; the value setter clears it all the same).
_BLOB = "_local_blob"
_LOCK_TYPES = (type(threading.Lock()), type(threading.RLock()))
_objects_dir: Path | None = None  # where bodies are read from while a state is loaded


def _new_lock(kind: type) -> Any:
    return threading.RLock() if kind is type(threading.RLock()) else threading.Lock()


def _new_condition() -> threading.Condition:
    return threading.Condition()


def _versioned_store(items: list[tuple[str, list[Any]]]) -> _VersionedKeyStore:
    store = _VersionedKeyStore()
    for name, versions in items:
        dict.__setitem__(store, name, versions)
    return store


def _new_key() -> FakeKey:
    # Through moto's BaseModel.__new__, which tracks instances for moto's reset.
    return cast(FakeKey, FakeKey.__new__(FakeKey))


def _set_key_state(key: FakeKey, state: dict[str, Any]) -> None:
    blob = state.pop(_BLOB)
    key.__dict__.update(state)
    key.lock = threading.Lock()
    key._value_buffer = tempfile.SpooledTemporaryFile(max_size=key._max_buffer_size)  # noqa: SIM115
    if blob is None:  # a disposed key (its buffer was closed when it was deleted)
        key._value_buffer.close()
        return
    assert _objects_dir is not None
    key._value_buffer.write((_objects_dir / blob).read_bytes())
    key.__dict__[_BLOB] = blob


class _StatePickler(pickle.Pickler):
    """Pickles moto's backends: fresh locks, S3 bodies to files, versioned key stores whole."""

    def __init__(self, file: io.BufferedWriter, objects_dir: Path) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.objects_dir = objects_dir
        self.blobs: set[str] = set()

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, _LOCK_TYPES):
            return _new_lock, (type(obj),)
        if isinstance(obj, threading.Condition):
            return _new_condition, ()
        if isinstance(obj, _VersionedKeyStore):
            # Its items() yields only each name's latest version; the versions are the dict's values.
            return _versioned_store, (list(dict.items(obj)),)
        if isinstance(obj, FakeKey):
            return _new_key, (), self._key_state(obj), None, None, _set_key_state
        return NotImplemented

    def _key_state(self, key: FakeKey) -> dict[str, Any]:
        state = {k: v for k, v in key.__dict__.items() if k not in ("_value_buffer", "lock", _BLOB)}
        blob = key.__dict__.get(_BLOB)
        if blob is None:
            try:
                body = key.value
            except ValueError:  # buffer closed: the key was deleted; nothing to keep
                state[_BLOB] = None
                return state
            blob = uuid.uuid4().hex
            _write_atomically(self.objects_dir / blob, body)
            key.__dict__[_BLOB] = blob
        self.blobs.add(blob)
        state[_BLOB] = blob
        return state


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


_BACKEND_DICT_OWN = frozenset(vars(BackendDict(BaseBackend, "x")))


def _backends() -> dict[str, dict[str, Any]]:
    """Every backend moto has created: service -> account -> region -> backend."""
    out: dict[str, dict[str, Any]] = {}
    for backend_dict in BackendDict._instances:  # type: ignore[misc]
        accounts = {account: dict(regions.items()) for account, regions in dict.items(backend_dict)}
        if any(accounts.values()):
            assert backend_dict.service_name not in out, backend_dict.service_name
            out[backend_dict.service_name] = {
                "accounts": accounts,
                # S3BackendDict's bucket_accounts: which account holds a bucket name.
                "attributes": {k: v for k, v in vars(backend_dict).items() if k not in _BACKEND_DICT_OWN},
            }
    return out


def save(directory: Path) -> float:
    """Write moto's state to ``directory``; returns the seconds it took. Call with moto idle."""
    started = time.monotonic()
    objects_dir = directory / OBJECTS_DIR
    objects_dir.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{STATE_FILE}.tmp"
    with open(tmp, "wb") as f:
        pickler = _StatePickler(f, objects_dir)
        pickler.dump(_backends())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, directory / STATE_FILE)
    for path in objects_dir.iterdir():
        if path.name not in pickler.blobs:
            path.unlink(missing_ok=True)
    return time.monotonic() - started


def load(directory: Path) -> bool:
    """Put a saved state back into moto's backends (before the server answers); False if none."""
    global _objects_dir
    path = directory / STATE_FILE
    if not path.exists():
        return False
    from moto.backends import get_backend

    _objects_dir = directory / OBJECTS_DIR
    try:
        with open(path, "rb") as f:
            state: dict[str, dict[str, Any]] = pickle.load(f)  # noqa: S301 - our own file
    finally:
        _objects_dir = None
    for service, saved in state.items():
        backend_dict: Any = get_backend(service)  # type: ignore[call-overload]
        for name, value in saved["attributes"].items():
            setattr(backend_dict, name, value)
        for account, regions in saved["accounts"].items():
            for region, backend in regions.items():
                backend_dict[account][region] = backend
    return True


# X-Amz-Target operations (JSON protocols) that change nothing worth a save.
_READS = frozenset(
    {
        "ReceiveMessage",
        "GetQueueAttributes",
        "GetQueueUrl",
        "ListQueues",
        "GetItem",
        "BatchGetItem",
        "TransactGetItems",
        "Query",
        "Scan",
        "DescribeTable",
        "ListTables",
        "GetSecretValue",
        "DescribeSecret",
    }
)


def _changes_data(environ: dict[str, Any]) -> bool:
    if environ.get("REQUEST_METHOD") in ("GET", "HEAD"):
        return False
    target = str(environ.get("HTTP_X_AMZ_TARGET", ""))
    return target.rpartition(".")[2] not in _READS


class PersistentState:
    """Saves moto's state now and then while it runs, and at the end.

    Requests run under a shared lock and a save under the exclusive one, so a save sees no
    half-applied request. A save runs every ``every_seconds`` if a request that can change data
    arrived since the last one (SQS polls that found nothing do not count).
    """

    def __init__(self, directory: Path, every_seconds: float) -> None:
        self.directory = directory
        self.every_seconds = every_seconds
        self._cond = threading.Condition()
        self._active = 0
        self._saving = False
        self._dirty = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="moto-state", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wrap(self, app: Callable[..., Any]) -> Callable[..., Any]:
        """WSGI middleware: each request holds the shared lock while moto handles it."""

        def middleware(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
            with self._cond:
                while self._saving:
                    self._cond.wait()
                self._active += 1
                if _changes_data(environ):
                    self._dirty = True
            try:
                # moto builds the whole response body before returning it.
                return list(app(environ, start_response))
            finally:
                with self._cond:
                    self._active -= 1
                    self._cond.notify_all()

        return middleware

    def save(self) -> None:
        with self._cond:
            while self._saving:
                self._cond.wait()
            self._saving = True
            while self._active:
                self._cond.wait()
            self._dirty = False
        try:
            seconds = save(self.directory)
            LOG.info("saved the stand-in's state to %s in %.2f s", self.directory, seconds)
        finally:
            with self._cond:
                self._saving = False
                self._cond.notify_all()

    def stop(self) -> None:
        self._stop.set()
        self.save()

    def _run(self) -> None:
        while not self._stop.wait(self.every_seconds):
            if self._dirty:
                try:
                    self.save()
                except Exception:
                    LOG.exception("saving the stand-in's state failed; it is retried")
