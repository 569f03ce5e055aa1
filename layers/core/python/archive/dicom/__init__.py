"""DICOM codecs and checks that need no AWS."""
