"""Pure rules of ingest: whose patient an image belongs to, and how errors become DICOM statuses."""

from __future__ import annotations

import pytest
from archive.dicom.instance import InstanceHeader
from archive.errors import (
    DatasetDoesNotMatchSOPClass,
    InstanceConflict,
    InvalidDataset,
    ObjectTooLarge,
    PatientIdConflict,
    StorageFailure,
    UntrustedPatientId,
)
from archive.model.identity import PatientIdentity
from archive.model.organisations import OrganisationInfo
from archive.services.ingest import patient_identity

from listeners.dicom.server import status_for
from tests.support.dicom import ct_dataset

ORG = OrganisationInfo("1.2.246.10.1.10", "Test", ("1.2.246.21",), "1.2.246.10.1.22.2026")
STRICT = OrganisationInfo("1.2.246.10.2.10", "Strict", ("1.2.246.21",), None)


def _header(**kwargs: object) -> InstanceHeader:
    return InstanceHeader.from_dataset(ct_dataset(**kwargs), has_pixel_data=True)  # type: ignore[arg-type]


def test_trusted_issuer_from_the_dataset_is_used() -> None:
    assert patient_identity(_header(), ORG) == PatientIdentity("020516C903K", "1.2.246.21")


def test_issuer_from_qualifiers_sequence_wins_over_namespace() -> None:
    ds = ct_dataset()
    ds.IssuerOfPatientID = "HOSPITAL"
    header = InstanceHeader.from_dataset(ds, has_pixel_data=True)
    assert header.issuer == "1.2.246.21"


def test_missing_issuer_takes_the_default_issuer() -> None:
    assert patient_identity(_header(issuer=None), ORG).issuer == "1.2.246.10.1.22.2026"


@pytest.mark.parametrize(
    ("org", "kwargs"),
    [(STRICT, {"issuer": None}), (ORG, {"issuer": "9.9.9"}), (ORG, {"patient_id": ""})],
)
def test_untrusted_or_missing_identity_is_refused(org: OrganisationInfo, kwargs: dict[str, object]) -> None:
    with pytest.raises(UntrustedPatientId):
        patient_identity(_header(**kwargs), org)


def test_patient_key_round_trips() -> None:
    identity = PatientIdentity("020516C903K", "1.2.246.21")
    assert PatientIdentity.from_key(identity.key) == identity


def test_missing_uid_does_not_match_sop_class() -> None:
    ds = ct_dataset()
    del ds.StudyInstanceUID
    with pytest.raises(DatasetDoesNotMatchSOPClass):
        InstanceHeader.from_dataset(ds)


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (InvalidDataset(), 0xC000),
        (DatasetDoesNotMatchSOPClass(), 0xA900),
        (UntrustedPatientId(), 0xA777),
        (PatientIdConflict(), 0xA778),
        (InstanceConflict(), 0x0124),
        (ObjectTooLarge(), 0xA700),
        (StorageFailure(), 0xA700),
        (RuntimeError(), 0xA700),
    ],
)
def test_each_error_type_has_its_status(error: Exception, status: int) -> None:
    assert status_for(error) == status
