"""The XDS-I.b imaging manifest: a Key Object Selection (KOS) document listing a whole study.

Built with pydicom (the KOS IOD, PS3.3 A.35.4, with TID 2010 content): Document Title (113030, DCM,
"Manifest"), every instance of the study in the Current Requested Procedure Evidence Sequence by
series, each series with the Retrieve AE Title and the Retrieve Location UID (the
repositoryUniqueId used for RAD-69), and in the content tree. Patient and study attributes are those
the archive holds now (after merges and name updates). The manifest is its own series (KO); its UIDs
come from the operator's root and are derived from the study, the version and the content, so a
repeated registration makes the same UIDs (idempotent storage and registration).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import datetime

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from archive.dicom.instance import ISSUER_TYPE_ISO
from archive.dicom.times import dicom_date_time
from archive.model.registration import KOS_SOP_CLASS, RegistrationProfile, StudyContent, StudyInstance

MANIFEST_TITLE = ("113030", "DCM", "Manifest")
UTF8 = "ISO_IR 192"
MANIFEST_SERIES_NUMBER = 9999  # apart from the study's own series, as dcm4chee's manifests
IMPLEMENTATION_CLASS_UID = "1.2.826.0.1.3680043.10.1394.1"
IMPLEMENTATION_VERSION = "NIA_KOS_1"


def manifest_uids(uid_root: str, study_uid: str, version: int, fingerprint: str) -> tuple[str, str]:
    """(Series Instance UID, SOP Instance UID) of a manifest version, from the operator's root."""
    prefix = uid_root.rstrip(".") + "."
    series = generate_uid(
        prefix=prefix, entropy_srcs=["manifest-series", study_uid, str(version), fingerprint]
    )
    sop = generate_uid(prefix=prefix, entropy_srcs=["manifest", study_uid, str(version), fingerprint])
    return str(series), str(sop)


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _sop_reference(instance: StudyInstance) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = instance.sop_class_uid
    item.ReferencedSOPInstanceUID = instance.sop_instance_uid
    return item


def _evidence(content: StudyContent, retrieve_ae: str, retrieve_location: str) -> Dataset:
    by_series: dict[str, list[StudyInstance]] = {}
    for instance in content.instances:
        by_series.setdefault(instance.series_uid, []).append(instance)
    study = Dataset()
    study.StudyInstanceUID = content.study_uid
    series_items = []
    for series_uid, instances in by_series.items():
        series = Dataset()
        series.SeriesInstanceUID = series_uid
        series.RetrieveAETitle = retrieve_ae
        series.RetrieveLocationUID = retrieve_location
        series.ReferencedSOPSequence = [_sop_reference(i) for i in instances]
        series_items.append(series)
    study.ReferencedSeriesSequence = series_items
    return study


def _content_items(instances: Sequence[StudyInstance]) -> list[Dataset]:
    items = []
    for instance in instances:
        item = Dataset()
        item.RelationshipType = "CONTAINS"
        item.ValueType = "IMAGE" if instance.is_image else "COMPOSITE"
        item.ReferencedSOPSequence = [_sop_reference(instance)]
        items.append(item)
    return items


def build_manifest(
    content: StudyContent,
    profile: RegistrationProfile,
    *,
    version: int,
    created: datetime,
) -> Dataset:
    """The manifest of ``content`` as registration version ``version`` (a dataset with file meta)."""
    if not content.instances:
        raise ValueError(f"study {content.study_uid} has no instances to list")
    archive = profile.archive
    series_uid, sop_uid = manifest_uids(archive.uid_root, content.study_uid, version, content.fingerprint())
    date, time, offset = dicom_date_time(created, profile.zone)

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = UID(KOS_SOP_CLASS)
    ds.file_meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    ds.file_meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    # SOP Common
    ds.SpecificCharacterSet = UTF8
    ds.InstanceCreationDate = date
    ds.InstanceCreationTime = time
    ds.SOPClassUID = KOS_SOP_CLASS
    ds.SOPInstanceUID = sop_uid
    ds.TimezoneOffsetFromUTC = offset
    ds.InstanceCreatorUID = archive.uid_root.rstrip(".")
    # Patient (as the archive knows the patient now)
    patient = content.patient
    ds.PatientName = patient.name or ""
    ds.PatientID = patient.patient_id
    ds.IssuerOfPatientID = patient.issuer
    qualifiers = Dataset()
    qualifiers.UniversalEntityID = patient.issuer
    qualifiers.UniversalEntityIDType = ISSUER_TYPE_ISO
    ds.IssuerOfPatientIDQualifiersSequence = [qualifiers]
    ds.PatientBirthDate = patient.birth_date or ""
    ds.PatientSex = patient.sex or ""
    # General Study
    ds.StudyInstanceUID = content.study_uid
    ds.StudyDate = content.study_date or ""
    ds.StudyTime = content.study_time or ""
    ds.ReferringPhysicianName = content.referring_physician_name or ""
    ds.StudyID = content.study_id or ""
    ds.AccessionNumber = content.accession_number or ""
    if content.accession_number and content.accession_issuer:
        issuer = Dataset()
        issuer.UniversalEntityID = content.accession_issuer
        issuer.UniversalEntityIDType = ISSUER_TYPE_ISO
        ds.IssuerOfAccessionNumberSequence = [issuer]
    if content.study_description:
        ds.StudyDescription = content.study_description
    # Key Object Document Series
    ds.Modality = "KO"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = MANIFEST_SERIES_NUMBER
    ds.SeriesDate = date
    ds.SeriesTime = time
    ds.SeriesDescription = "XDS-I.b manifest"
    ds.ReferencedPerformedProcedureStepSequence = []
    # General Equipment
    ds.Manufacturer = archive.name
    ds.InstitutionName = profile.org_name
    # Key Object Document
    ds.InstanceNumber = version
    ds.ContentDate = date
    ds.ContentTime = time
    ds.CurrentRequestedProcedureEvidenceSequence = [
        _evidence(content, archive.retrieve_ae_title, archive.repository_unique_id)
    ]
    # SR Document Content (TID 2010 Key Object Selection)
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = [_code(*MANIFEST_TITLE)]
    ds.ContinuityOfContent = "SEPARATE"
    template = Dataset()
    template.MappingResource = "DCMR"
    template.TemplateIdentifier = "2010"
    ds.ContentTemplateSequence = [template]
    ds.ContentSequence = _content_items(content.instances)
    return ds


def encode(ds: Dataset) -> bytes:
    """The manifest as a DICOM Part-10 file."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
