"""What one stored instance costs in DynamoDB storage, measured on items the index function writes.

    python -m bench.index_size

Starts a local cloud (moto server, the DICOM listener, the index function fed from SQS), stores
pydicom's real CT and MR test images with 64-character UIDs (the longest DICOM allows, so the
figures are an upper bound for UID-heavy items), waits until they are indexed, reads the raw items
of the instance table and sizes them by DynamoDB's published rules. The cost model's
``index_bytes_per_instance`` should not be below what this prints.

DynamoDB's rules (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/CapacityUnitCalculations.html
and .../bp-indexes-general.html, "storage"): an item's size is the UTF-8 length of each attribute
name plus its value (string: UTF-8 bytes; number: 1 byte per two significant digits + 1; binary:
its length; boolean and null: 1; list and map: 3 bytes + 1 per element + the elements; set: the sum
of its elements); storage is billed on that plus 100 bytes per item. A global secondary index item
holds the projected attributes (all of them with an ALL projection) plus 100 bytes.
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ITEM_OVERHEAD_BYTES = 100  # per item, in the table and in each index holding it


def value_bytes(value: Mapping[str, Any]) -> int:
    """Size of one attribute value in DynamoDB's low-level JSON form (``{"S": "..."}`` etc.)."""
    ((kind, data),) = value.items()
    if kind == "S":
        return len(data.encode("utf-8"))
    if kind == "N":
        return number_bytes(data)
    if kind == "B":
        return len(data)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(len(s.encode("utf-8")) for s in data)
    if kind == "NS":
        return sum(number_bytes(n) for n in data)
    if kind == "BS":
        return sum(len(b) for b in data)
    if kind == "L":
        return 3 + sum(1 + value_bytes(v) for v in data)
    if kind == "M":
        return 3 + sum(1 + len(k.encode("utf-8")) + value_bytes(v) for k, v in data.items())
    raise ValueError(f"unknown DynamoDB type {kind!r}")


def number_bytes(text: str) -> int:
    """1 byte per two significant digits (leading and trailing zeros trimmed) plus 1."""
    digits = text.lstrip("+-").replace(".", "").split("e")[0].split("E")[0].strip("0")
    return math.ceil(len(digits) / 2) + 1


def item_bytes(item: Mapping[str, Mapping[str, Any]], names: set[str] | None = None) -> int:
    """An item's size as DynamoDB counts it (names + values), of all attributes or only ``names``."""
    return sum(
        len(name.encode("utf-8")) + value_bytes(value)
        for name, value in item.items()
        if names is None or name in names
    )


@dataclass(frozen=True)
class ItemSize:
    source: str
    attributes: int
    item_bytes: int  # the instance table item
    by_study_bytes: int  # its copy in the by_study index (ALL projection)
    largest: tuple[tuple[str, int], ...]  # the biggest attributes, name + value bytes

    @property
    def stored_bytes(self) -> int:
        """What storage is billed on for one instance: item and index copy, each + 100 bytes."""
        return self.item_bytes + self.by_study_bytes + 2 * ITEM_OVERHEAD_BYTES


def size_of(source: str, item: Mapping[str, Mapping[str, Any]], index_projection: str = "ALL") -> ItemSize:
    """Sizes of an instance item and its by_study index copy (ALL: every attribute)."""
    size = item_bytes(item)
    per_attribute = sorted(
        ((name, len(name) + value_bytes(value)) for name, value in item.items()), key=lambda p: -p[1]
    )
    if index_projection != "ALL":
        raise ValueError("only the ALL projection is sized here")
    return ItemSize(source, len(item), size, size, tuple(per_attribute[:6]))


def measure(files: list[Path]) -> list[ItemSize]:  # pragma: no cover - needs a local cloud
    """Store ``files`` (with fresh 64-character UIDs) in a local cloud; size their instance items."""
    import pydicom
    from archive.data.models import Instance
    from pydicom.uid import generate_uid
    from pynetdicom import AE  # type: ignore[attr-defined]

    from local.cloud import LocalCloud, free_port
    from local.resources import client, local_table_names

    with tempfile.TemporaryDirectory() as tmp:
        cloud = LocalCloud(
            dicom_port=free_port(),
            log_dir=Path(tmp) / "logs",
            tls_dir=Path(tmp) / "tls",
            start_hl7=False,
            start_xds=False,
        )
        cloud.start()
        try:
            datasets = []
            for path in files:
                ds = pydicom.dcmread(path)
                ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
                ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
                datasets.append((path.name, ds))
            ae = AE(ae_title="DEMO_MOD")
            for _, ds in datasets:
                ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
            assoc = ae.associate("127.0.0.1", cloud.dicom_port, ae_title="ARCHIVE")
            try:
                for name, ds in datasets:
                    status = assoc.send_c_store(ds)
                    if status.get("Status") != 0:
                        raise RuntimeError(f"C-STORE of {name} failed: {status}")
            finally:
                assoc.release()
            dynamodb = client("dynamodb", cloud.endpoint)
            table = local_table_names()[Instance.Meta.logical_name]  # type: ignore[attr-defined]
            sizes = []
            for name, ds in datasets:
                deadline = time.monotonic() + 60
                while True:
                    item = dynamodb.get_item(
                        TableName=table, Key={"sop_instance_uid": {"S": ds.SOPInstanceUID}}
                    ).get("Item")
                    if item or time.monotonic() > deadline:
                        break
                    time.sleep(0.2)
                if not item:
                    raise RuntimeError(f"{name} was not indexed within 60 s")
                sizes.append(size_of(name, item))
            return sizes
        finally:
            cloud.stop()


def real_images() -> list[Path]:
    """pydicom's bundled real CT and MR images (clinical headers, uncompressed pixel data)."""
    from pydicom.data import get_testdata_file

    return [Path(str(get_testdata_file(name))) for name in ("CT_small.dcm", "MR_small.dcm")]


def main() -> None:  # pragma: no cover - needs a local cloud
    sizes = measure(real_images())
    print("| image | attributes | item bytes | by_study copy | billed per instance (+100 B each) |")
    print("|---|---:|---:|---:|---:|")
    for s in sizes:
        print(f"| {s.source} | {s.attributes} | {s.item_bytes} | {s.by_study_bytes} | {s.stored_bytes} |")
    print()
    for s in sizes:
        print(f"{s.source}: largest attributes " + ", ".join(f"{n} {b}" for n, b in s.largest))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
