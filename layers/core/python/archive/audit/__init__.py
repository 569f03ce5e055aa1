"""IHE ATNA audit messages: DICOM PS3.15 A.5 XML, and RFC 5424/5425 syslog framing for ITI-20."""
