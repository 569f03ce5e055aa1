"""The object metadata the listener writes is what the index reads back (one type, both ways)."""

from __future__ import annotations

from datetime import UTC, datetime

from archive.data.objects import InstanceMetadata


def test_metadata_survives_the_round_trip_through_s3_keys() -> None:
    # Given metadata with characters S3 user metadata cannot carry as is (a space in the AE
    # title, the carets of a patient key)
    written = InstanceMetadata(
        patient_key="020516C903K^^^1.2.246.21",
        sending_ae="CT ROOM 1",
        org_oid="1.2.246.10.1",
        received_at=datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC),
        transfer_syntax="1.2.840.10008.1.2.1",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        study_uid="1.2.3",
        series_uid="1.2.3.4",
        tolerated=("group-length", "odd-length"),
    )
    # When it is written as S3 metadata and read back
    metadata = written.as_object_metadata()
    read = InstanceMetadata.from_object_metadata(metadata)
    # Then every value is ASCII on the wire and comes back unchanged
    assert all(v.isascii() and " " not in v and "^" not in v for v in metadata.values())
    assert metadata["patient-key"] == "020516C903K%5E%5E%5E1.2.246.21"
    assert metadata["tolerated"] == "group-length,odd-length"
    assert read == written


def test_metadata_without_optional_keys_reads_as_unknown() -> None:
    read = InstanceMetadata.from_object_metadata({"patient-key": "X^^^1.2"})
    assert read.patient_key == "X^^^1.2"
    assert (read.sending_ae, read.org_oid, read.received_at, read.transfer_syntax) == (None, None, None, "")
    assert read.tolerated == ()
