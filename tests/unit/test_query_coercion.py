"""Attribute coercion on the way out, and the presentation contexts proposed to a move destination."""

from __future__ import annotations

from io import BytesIO

import pydicom
from archive.dicom.coercion import coerce
from archive.model.records import PatientDemographics
from archive.services.query.retrieve import RetrieveItem
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit

from listeners.dicom.query_retrieve import move_contexts
from tests.support.dicom import ct_dataset


def test_coercion_replaces_identity_and_keeps_other_text_readable() -> None:
    # Given a stored dataset in ISO_IR 100 with a Latin-1 description
    ds = ct_dataset(patient_id="TEMP1", issuer="1.2.246.10.1.22.2026", patient_name="Old^Name")
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.StudyDescription = "Pää"
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    stored = pydicom.dcmread(BytesIO(buffer.getvalue()))
    # When the current identity (a hetu, a name outside Latin-1) is applied
    current = PatientDemographics(
        "020516C903K^^^1.2.246.21", "020516C903K", "1.2.246.21", "Šilić^Žana", "19160502", "F"
    )
    coerce(stored, current)
    out = BytesIO()
    stored.save_as(out)
    sent = pydicom.dcmread(BytesIO(out.getvalue()))
    # Then the sent dataset carries it, encoded in UTF-8, and the other text survived
    assert sent.PatientID == "020516C903K" and sent.IssuerOfPatientID == "1.2.246.21"
    assert sent.IssuerOfPatientIDQualifiersSequence[0].UniversalEntityID == "1.2.246.21"
    assert str(sent.PatientName) == "Šilić^Žana" and sent.PatientSex == "F"
    assert sent.SpecificCharacterSet == "ISO_IR 192"
    assert sent.StudyDescription == "Pää"


def _item(sop_class: str, syntax: str) -> RetrieveItem:
    patient = PatientDemographics("X^^^I", "X", "I")
    return RetrieveItem("1.2", sop_class, "1.3", syntax, "k", None, 1, patient, None)


def test_move_contexts_offer_stored_syntax_and_uncompressed_fallback() -> None:
    contexts = move_contexts(
        [
            _item("1.2.840.10008.5.1.4.1.1.2", JPEGBaseline8Bit),
            _item("1.2.840.10008.5.1.4.1.1.7", ExplicitVRLittleEndian),
        ]
    )
    offered = {(cx.abstract_syntax, tuple(cx.transfer_syntax)) for cx in contexts}
    assert ("1.2.840.10008.5.1.4.1.1.2", (JPEGBaseline8Bit,)) in offered
    assert ("1.2.840.10008.5.1.4.1.1.2", (ExplicitVRLittleEndian, "1.2.840.10008.1.2")) in offered
    assert ("1.2.840.10008.5.1.4.1.1.7", (ExplicitVRLittleEndian, "1.2.840.10008.1.2")) in offered
    # each stored syntax alone too, so a receiver that takes it gets the object as stored
    assert ("1.2.840.10008.5.1.4.1.1.7", (ExplicitVRLittleEndian,)) in offered
    assert len(contexts) == 4
