"""One exception hierarchy for the archive.

Each edge (C-STORE status, N-EVENT-REPORT failure reason, HL7 ACK, SOAP fault, HTTP status) maps
exception *types* to its own codes; nothing matches on message text.
"""

from __future__ import annotations


class ArchiveError(Exception):
    """Base of every error the archive raises on purpose."""


class ConfigurationError(ArchiveError):
    """The configuration registry does not allow what was asked."""


class UnknownOrganisation(ConfigurationError):
    pass


class UnknownApplicationEntity(ConfigurationError):
    pass


class DuplicateEntry(ConfigurationError):
    pass


class InvalidDataset(ArchiveError):
    """The dataset cannot be parsed (DICOM 0xC000 Cannot understand)."""


class DatasetDoesNotMatchSOPClass(ArchiveError):
    """Required attributes missing or inconsistent with the SOP class (DICOM 0xA900)."""


class UntrustedPatientId(ArchiveError):
    """No Patient ID from a trusted assigning authority (dcm4chee 0xA777)."""


class PatientIdConflict(ArchiveError):
    """The Patient ID differs from the one the study already has (dcm4chee 0xA778)."""


class InstanceConflict(ArchiveError):
    """The SOP Instance UID is stored already with different content (0x0124 Refused: Not authorised)."""


class ObjectTooLarge(ArchiveError):
    """The object exceeds what the archive accepts in one C-STORE (0xA700 Out of resources)."""


class StorageFailure(ArchiveError):
    """The object could not be made durable (0xA700 Out of resources)."""
