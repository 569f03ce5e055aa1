"""The DynamoDB storage the cost model assumes per instance holds for items the index function writes."""

from __future__ import annotations

import pydicom
from archive.data.models import Instance
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from bench.cost_model import Assumptions
from bench.index_size import ITEM_OVERHEAD_BYTES, size_of
from local.cloud import LocalCloud
from local.resources import local_table_names
from tests.support.cloud import dynamodb, wait_until
from tests.support.scu import Modality


def test_instance_items_of_real_ct_and_mr_fit_the_cost_models_bytes_per_instance(cloud: LocalCloud) -> None:
    # Given pydicom's real CT and MR images with the longest UIDs DICOM allows, stored and indexed
    datasets = []
    for name in ("CT_small.dcm", "MR_small.dcm"):
        ds = pydicom.dcmread(str(get_testdata_file(name)))
        ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        datasets.append(ds)
    modality = Modality(cloud.dicom_port)
    try:
        assert [modality.store(ds) for ds in datasets] == [0, 0]
    finally:
        modality.release()
    table = local_table_names()[Instance.Meta.logical_name]  # type: ignore[attr-defined]
    db = dynamodb(cloud)

    def raw_item(uid: str) -> dict | None:  # type: ignore[type-arg]
        return db.get_item(TableName=table, Key={"sop_instance_uid": {"S": uid}}).get("Item")

    # When their raw items are sized by DynamoDB's rules
    sizes = [
        size_of(ds.SOPInstanceUID, wait_until(lambda ds=ds: raw_item(ds.SOPInstanceUID))) for ds in datasets
    ]

    # Then each item carries its identity (the UIDs alone are over 256 bytes), and item plus its
    # by_study copy, with DynamoDB's 100 bytes each, is within what the cost model bills
    for size in sizes:
        assert size.item_bytes > 4 * 64
        assert size.stored_bytes == 2 * size.item_bytes + 2 * ITEM_OVERHEAD_BYTES
        assert size.stored_bytes <= Assumptions().index_bytes_per_instance
