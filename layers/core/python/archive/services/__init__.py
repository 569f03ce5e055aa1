"""Services: the archive's behaviour, above the codecs (dicom, hl7, xds, audit, tls) and data."""
