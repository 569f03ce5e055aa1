"""Storage commitment messages: parsing N-ACTION information and building the N-EVENT-REPORT."""

from __future__ import annotations

import pytest
from archive.dicom.commitment import event_report, request_from_action_information
from archive.errors import CommitmentRequestTooLarge, InvalidCommitmentRequest
from archive.model.commitment import MAX_REFERENCES, CommitmentResult, Reference

from tests.support.scu import action_information

CT = "1.2.840.10008.5.1.4.1.1.2"


def test_request_is_read_from_action_information() -> None:
    info = action_information([(CT, "1.2.3.1"), (CT, "1.2.3.2")], transaction_uid="1.2.3.99")
    request = request_from_action_information(info)
    assert request.transaction_uid == "1.2.3.99"
    assert request.references == (Reference(CT, "1.2.3.1"), Reference(CT, "1.2.3.2"))


def test_item_without_instance_uid_is_refused() -> None:
    info = action_information([(CT, "1.2.3.1")])
    del info.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
    with pytest.raises(InvalidCommitmentRequest, match="lacks"):
        request_from_action_information(info)


@pytest.mark.parametrize("uid", ["", "1.2.3.x", "1." + "2" * 70, "1..2"])
def test_a_reference_that_is_not_a_uid_is_refused(uid: str) -> None:
    info = action_information([(CT, "1.2.3.1")])
    info.ReferencedSOPSequence[0].ReferencedSOPInstanceUID = uid
    with pytest.raises(InvalidCommitmentRequest):
        request_from_action_information(info)


def test_more_references_than_one_transaction_holds_are_refused() -> None:
    info = action_information([(CT, "1.2.3.1")])
    # The same item over and over: the count is what matters (and building 40,001 items is slow).
    info.ReferencedSOPSequence = [info.ReferencedSOPSequence[0]] * (MAX_REFERENCES + 1)
    with pytest.raises(CommitmentRequestTooLarge):
        request_from_action_information(info)


def test_all_committed_is_event_type_1_without_failed_sequence() -> None:
    result = CommitmentResult(committed=[Reference(CT, "1.2.3.1")])
    event_type, ds = event_report("1.2.3.99", result, "ARCHIVE")
    assert event_type == 1
    assert ds.TransactionUID == "1.2.3.99"
    assert ds.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == "1.2.3.1"
    assert ds.RetrieveAETitle == "ARCHIVE"
    assert "FailedSOPSequence" not in ds


def test_failures_are_event_type_2_with_reasons() -> None:
    result = CommitmentResult(committed=[], failed=[(Reference(CT, "1.2.3.2"), 0x0112)])
    event_type, ds = event_report("1.2.3.99", result, "ARCHIVE")
    assert event_type == 2
    assert "ReferencedSOPSequence" not in ds
    assert ds.FailedSOPSequence[0].FailureReason == 0x0112


def test_result_survives_its_stored_form_of_one_outcome_per_reference() -> None:
    refs = [Reference(CT, "1"), Reference(CT, "2"), Reference(CT, "3")]
    result = CommitmentResult(committed=[refs[0], refs[2]], failed=[(refs[1], 0x0119)])
    outcomes = result.outcomes(refs)
    assert outcomes == [0, 0x0119, 0]
    again = CommitmentResult.from_outcomes(refs, outcomes)
    assert again.committed == result.committed and again.failed == result.failed


def test_unsettled_result_is_not_settled() -> None:
    assert not CommitmentResult(unsettled=[Reference(CT, "1")]).settled
