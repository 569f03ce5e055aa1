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


# --- HL7 v2 patient administration (ADT) ------------------------------------------------------
# The MLLP listener maps these types to ACK codes and HL7 table 0357 error codes.


class HL7MessageError(ArchiveError):
    """An HL7 message the archive cannot accept as sent; ``location`` is an ERR-2 location
    (``SEG^seq^field^rep^comp``) when one field is to blame."""

    def __init__(self, message: str, *, location: str | None = None) -> None:
        super().__init__(message)
        self.location = location


class MalformedMessage(HL7MessageError):
    """Not a parseable HL7 v2 message (no MSH, broken encoding characters, too large)."""


class UnsupportedMessageType(HL7MessageError):
    """MSH-9.1 is not a message type the archive accepts (HL7 error 200)."""


class UnsupportedTriggerEvent(HL7MessageError):
    """MSH-9.2 is not a trigger event the archive accepts (HL7 error 201)."""


class RequiredFieldMissing(HL7MessageError):
    """A field the event needs is empty (HL7 error 101)."""


class UnsupportedCharacterSet(HL7MessageError):
    """MSH-18 names a character set the archive does not decode, or the bytes do not match it."""


class UnknownSendingFacility(HL7MessageError, ConfigurationError):
    """MSH-4 is neither a registered organisation OID nor a registered HL7 facility (HL7 error 103)."""


class PatientUpdateRefused(ArchiveError):
    """A patient merge, identifier change or demographics update that would corrupt the index."""


class PatientMerged(PatientUpdateRefused):
    """The identifier was merged into another patient and no longer takes updates (HL7 error 204)."""


class DuplicatePatient(PatientUpdateRefused):
    """The new identifier of an identifier change is in use already (HL7 error 205)."""


class InvalidMerge(PatientUpdateRefused):
    """A merge of a patient with itself (HL7 error 207)."""


class QueueFailure(ArchiveError):
    """A message could not be durably queued; nothing was acknowledged (HL7 error 207)."""


class UnknownAssigningAuthority(HL7MessageError):
    """PID-3.4/MRG-1.4 is neither a trusted issuer OID nor a namespace mapped to one (HL7 error 103)."""


class MessageTooLarge(HL7MessageError):
    """An MLLP frame larger than the listener accepts; the connection is closed after the ACK."""


# --- query/retrieve (C-FIND, C-MOVE, C-GET) ---------------------------------------------------


class NotAuthorised(ArchiveError):
    """The calling AE lacks the role the operation needs (0x0124 Refused: Not authorised)."""


class QueryRefused(ArchiveError):
    """The identifier cannot be served (0xA900 Identifier does not match SOP Class)."""


class CountryWideQuery(QueryRefused):
    """No patient, study or accession key: a search over every patient in the country is refused."""


class UnknownMoveDestination(ArchiveError):
    """The Move Destination is not an AE of the caller's organisation with role move-destination (0xA801)."""


class TranscodingImpossible(ArchiveError):
    """The receiver accepts no transfer syntax the stored object can be sent or converted in."""


class AccessRecordNotWritten(ArchiveError):
    """The access record of a retrieval could not be written before sending: nothing is sent."""
