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


class StudyOfAnotherOrganisation(ArchiveError):
    """The Study Instance UID is controlled by another organisation (0x0124 Refused: Not authorised)."""


class InstanceConflict(ArchiveError):
    """The SOP Instance UID is stored already with different content (0x0124 Refused: Not authorised)."""


class ObjectTooLarge(ArchiveError):
    """The object exceeds what the archive accepts in one C-STORE (0xA700 Out of resources)."""


class StorageFailure(ArchiveError):
    """The object could not be made durable (0xA700 Out of resources)."""


# --- storage commitment (N-ACTION) -------------------------------------------------------------
# The DICOM listener maps these to N-ACTION statuses.


class InvalidCommitmentRequest(ArchiveError):
    """The Action Information is malformed (N-ACTION 0x0115 Invalid argument value)."""


class CommitmentRequestTooLarge(ArchiveError):
    """More references than one transaction can record atomically (N-ACTION 0x0213 Resource limitation)."""


class TransactionUIDInUse(ArchiveError):
    """The Transaction UID belongs to another requester's transaction (N-ACTION 0x0115)."""


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


class ChangeConflict(ArchiveError):
    """A conditional write lost against a concurrent change; the caller re-reads and decides again."""


class QueueFailure(ArchiveError):
    """A message could not be durably queued; nothing was acknowledged (HL7 error 207)."""


class InvalidFieldValue(HL7MessageError):
    """A field the archive would keep has a value it cannot keep as sent: too long for the DICOM
    attribute or the table key it ends in, characters those cannot carry, a malformed escape
    sequence, a date or code outside its format (HL7 error 102, data type error)."""


class MessageTooLargeToKeep(HL7MessageError):
    """The message fits the MLLP limit but not the queue or the history item that must keep it
    (HL7 error 207): acknowledging it would promise a change that could never be applied."""


class UnknownAssigningAuthority(HL7MessageError):
    """PID-3.4/MRG-1.4 cannot name an issuer: a namespace mapped to none, a universal ID whose type
    is not ISO or that is not an OID, or no authority where the sender has no default (HL7 error 103)."""


class UntrustedAssigningAuthority(HL7MessageError):
    """PID-3.4/MRG-1.4 names a well-formed issuer the organisation is not trusted for (HL7 error 204)."""


class NotControlledBySender(PatientUpdateRefused):
    """The change would touch an identity or studies another organisation controls (HL7 error 204)."""


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


# --- IOCM corrections (rejection notes); statuses as dcm4chee-arc gives them ------------------


class RejectionRefused(ArchiveError):
    """A rejection note the archive does not apply; nothing is rejected."""


class DuplicateRejectionNote(RejectionRefused):
    """This rejection note was received and applied already (0xA770)."""


class RejectedInstanceResent(ArchiveError):
    """A C-STORE of an instance that a rejection note hides (0xA771 subsequent occurrence)."""


class NoSuchInstanceToReject(RejectionRefused):
    """The note names an instance the archive does not hold (0xA772)."""


class RejectionClassConflict(RejectionRefused):
    """The note names an instance with another SOP Class than the archived one (0xA773)."""


class AlreadyRejected(RejectionRefused):
    """The note names an instance another note has rejected already (0xA774)."""


class RetentionExpiryRejectionNotAllowed(RejectionRefused):
    """A 113039 (retention expired) note where no retention rule allows early destruction (0xA775)."""


class RetentionNotExpired(RejectionRefused):
    """A 113039 note for a study whose retention has not ended yet (0xA776)."""


class RejectionNotAuthorised(RejectionRefused):
    """The sender's organisation does not control the study (0x0124 Refused: Not authorised)."""


class UnknownRejection(ArchiveError):
    """An operator named a rejection note the archive has no record of."""


class RetentionLocked(StorageFailure):
    """S3 refused to delete an object version: its Object Lock retention or legal hold holds it."""


# --- registration (XDS-I.b manifests) and IAN -------------------------------------------------


class RegistryConflict(ArchiveError):
    """A registry write lost against another (a replaced entry is no longer Approved)."""


class DuplicateUniqueId(RegistryConflict):
    """A uniqueId of the submission is registered already (XDSRegistryDuplicateUniqueIdInMessage)."""


class RegistrationNotConfigured(ConfigurationError):
    """The organisation (or the archive) has no registration configuration."""


class NotificationUndeliverable(ArchiveError):
    """An IAN could not be delivered this time (refused association, failure status, timeout)."""


# --- XDS (ITI-18, ITI-42, ITI-43, RAD-69) -----------------------------------------------------
# Two kinds. A SoapFaultError refuses the whole message before any XDS processing: the edge answers
# with a SOAP 1.2 Fault and nothing else. An XdsError is reported inside the transaction's response
# as a RegistryError of the RegistryErrorList; its ``code`` is the errorCode of ITI TF-3 4.2.4.


class SoapFaultError(ArchiveError):
    """The message is refused as a whole: the answer is a SOAP Fault."""


class UnsafeXml(SoapFaultError):
    """A DTD, an entity declaration or reference, or an external reference in the XML."""


class XmlTooLarge(SoapFaultError):
    """The message is larger than the archive accepts; reading stopped at the limit."""


class XmlTooDeep(SoapFaultError):
    """Elements nested deeper than the limit (a parser-exhaustion attempt)."""


class MalformedXml(SoapFaultError):
    """Not well-formed XML, or not the SOAP 1.2 envelope or multipart/related message expected."""


class AddressingHeaderMissing(SoapFaultError):
    """wsa:MessageID or wsa:Action is missing (WS-Addressing MessageAddressingHeaderRequired);
    ``header`` names it (``wsa:Action``)."""

    def __init__(self, message: str, *, header: str) -> None:
        super().__init__(message)
        self.header = header


class ActionNotSupported(SoapFaultError):
    """wsa:Action names no transaction of this endpoint (WS-Addressing ActionNotSupported)."""


class MustUnderstandHeader(SoapFaultError):
    """A header block marked mustUnderstand that the archive does not process (SOAP MustUnderstand)."""


class SecurityTokenError(SoapFaultError):
    """The XUA identity assertion cannot be accepted (WS-Security faults)."""


class AssertionMissing(SecurityTokenError):
    """No wsse:Security header or no SAML 2.0 assertion in it."""


class AssertionUnsigned(SecurityTokenError):
    """The assertion carries no XML signature."""


class AssertionSignatureInvalid(SecurityTokenError):
    """The signature does not verify against the identity provider's certificate (tampered)."""


class UntrustedIdentityProvider(SecurityTokenError):
    """The assertion's Issuer is no identity provider registered with the archive."""


class AssertionExpired(SecurityTokenError):
    """Outside the assertion's NotBefore/NotOnOrAfter window (with the allowed clock skew)."""


class AssertionAudienceMismatch(SecurityTokenError):
    """The AudienceRestriction does not name this archive."""


class ResourceIdMismatch(SecurityTokenError):
    """The assertion's resource-id is not the patient the request is about."""


class CertificateNotOfAssertion(SecurityTokenError):
    """The mutual-TLS client certificate does not identify the XUA assertion's organisation-id."""


class AssertionIncomplete(SecurityTokenError):
    """A required XUA attribute (subject-id, organization-id, purposeofuse) is missing or malformed."""


class XdsError(ArchiveError):
    """An error reported in a RegistryErrorList; ``code`` is its errorCode (ITI TF-3 4.2.4).

    ``location`` says where (a parameter name, an object id); ``warning`` makes it a Warning
    instead of an Error (the transaction then still succeeds).
    """

    code = "XDSRegistryError"

    def __init__(self, message: str, *, location: str | None = None, warning: bool = False) -> None:
        super().__init__(message)
        self.location = location
        self.warning = warning


class XdsRegistryError(XdsError):
    """Internal error or a request the registry cannot process (bad parameter values)."""

    code = "XDSRegistryError"


class XdsRegistryMetadataError(XdsError):
    """Submitted metadata violates ITI TF-3 4.1 (missing or malformed attribute, bad structure)."""

    code = "XDSRegistryMetadataError"


class XdsUnknownStoredQuery(XdsError):
    code = "XDSUnknownStoredQuery"


class XdsStoredQueryParamNumber(XdsError):
    """A required parameter is missing, a single-valued one has several values, or exclusive
    parameters are given together."""

    code = "XDSStoredQueryParamNumber"


class XdsUnknownPatientId(XdsError):
    code = "XDSUnknownPatientId"


class XdsPatientIdDoesNotMatch(XdsError):
    """Objects of one submission (or a replaced document) name different patients."""

    code = "XDSPatientIdDoesNotMatch"


class XdsDuplicateUniqueIdInMessage(XdsError):
    code = "XDSRegistryDuplicateUniqueIdInMessage"


class XdsDuplicateUniqueIdInRegistry(XdsError):
    code = "XDSDuplicateUniqueIdInRegistry"


class XdsResultNotSinglePatient(XdsError):
    code = "XDSResultNotSinglePatient"


class XdsTooManyResults(XdsError):
    code = "XDSTooManyResults"


class XdsUnknownRepositoryId(XdsError):
    code = "XDSUnknownRepositoryId"


class XdsDocumentUniqueIdError(XdsError):
    """ITI-43/RAD-69: the document (or DICOM instance) is not held here."""

    code = "XDSDocumentUniqueIdError"


class XdsRepositoryBusy(XdsError):
    """RAD-69: the instance is NEARLINE (in an archive storage class); its study's restore has been
    started and the error's text says when to retry."""

    code = "XDSRepositoryBusy"


class WadoTransferSyntaxUnavailable(XdsError):
    """RAD-69: the instance cannot be given in any requested transfer syntax (DICOM PS3.18 WADO-WS)."""

    code = "urn:dicom:wado:0007"


class SubmissionRejected(ArchiveError):
    """An ITI-42 submission failed validation; every error found is in ``errors`` (all or nothing)."""

    def __init__(self, errors: list[XdsError]) -> None:
        super().__init__("; ".join(f"{e.code}: {e}" for e in errors))
        self.errors = tuple(errors)


# --- connection security (docs/security.md) ----------------------------------------------------


class NotAuthenticated(ArchiveError):
    """The peer's certificate does not identify the organisation (or node) it claims to be, or a
    node registered for TLS connected without it (DICOM: association rejected; HL7: AR and the
    connection closed; HTTP 403)."""


# --- disclosure log ----------------------------------------------------------------------------


class DisclosureRefused(ArchiveError):
    """A disclosure notification the archive does not record (HTTP 4xx with the reason)."""


class InvalidNotification(DisclosureRefused):
    """A field is missing or malformed, or a time is not UTC (HTTP 400)."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class UnknownPatient(DisclosureRefused):
    """The patient is not known to the archive (HTTP 404)."""


class UnknownStudy(DisclosureRefused):
    """A study of the notification is not in the archive (HTTP 404)."""


class StudyNotControlled(DisclosureRefused):
    """The notifying organisation is not the controller of a study, or the study is another
    patient's (HTTP 403)."""


class NotificationConflict(DisclosureRefused):
    """The organisation's notification id was recorded before with other content (HTTP 409)."""


class AccessRecordNotWritten(ArchiveError):
    """The access record of a retrieval could not be written before sending: nothing is sent."""


class NothingToRestore(ArchiveError):
    """A restore was asked for a study with no instance in a storage class that needs one."""


class InstancesNearline(ArchiveError):
    """Instances asked for are in a cold storage class: a restore has been started; retry later."""
