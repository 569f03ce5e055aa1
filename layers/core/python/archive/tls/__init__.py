"""TLS for every connection: contexts per the DICOM/BCP 195 profile, peer certificates read as
organisation identities, and certificate material that can be rotated without a restart."""
