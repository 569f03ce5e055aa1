"""Reading the audit trail back from the local cloud's audit bucket, and the DICOM audit message
schema (tests/schemas/dicom-audit-message.rng) every message must validate against."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from archive.data.audit_store import AuditBucket
from lxml import etree

from local.cloud import LocalCloud
from tests.support.cloud import wait_until

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "schemas" / "dicom-audit-message.rng"
_read: dict[str, list[dict[str, Any]]] = {}
_lock = threading.Lock()


@cache
def schema() -> etree.RelaxNG:
    return etree.RelaxNG(etree.parse(str(SCHEMA_PATH)))


def assert_valid(xml: bytes | str) -> etree._Element:
    """Parse the message and fail with the schema's complaint if it does not validate."""
    document = etree.fromstring(xml.encode("utf-8") if isinstance(xml, str) else xml)
    validator = schema()
    assert validator.validate(document), f"{validator.error_log.last_error}\n{xml!r}"
    return document


def records(cloud: LocalCloud) -> list[dict[str, Any]]:
    """Every audit record written so far (batches are immutable: each is read once)."""
    assert cloud.settings is not None
    bucket = AuditBucket(cloud.settings)
    out: list[dict[str, Any]] = []
    for key in sorted(bucket.keys()):
        with _lock:
            cached = _read.get(key)
        if cached is None:
            cached = [json.loads(line) for line in bucket.read(key).splitlines() if line.strip()]
            with _lock:
                _read[key] = cached
        out.extend(cached)
    return out


def wait_for_record(
    cloud: LocalCloud, predicate: Callable[[dict[str, Any], etree._Element], bool], timeout: float = 60.0
) -> tuple[dict[str, Any], etree._Element]:
    """The first audit record (JSON summary, parsed XML) matching ``predicate``; its XML validates."""

    def find() -> tuple[dict[str, Any], etree._Element] | None:
        for record in records(cloud):
            document = etree.fromstring(record["xml"].encode("utf-8"))
            if predicate(record, document):
                assert_valid(record["xml"])
                return record, document
        return None

    return wait_until(find, timeout=timeout, interval=0.3)


def mentions(document: etree._Element, text: str) -> bool:
    """Whether any attribute or text of the message contains ``text``."""
    return text in etree.tostring(document, encoding="unicode")
