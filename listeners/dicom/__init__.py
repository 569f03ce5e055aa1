"""The DICOM listener: C-ECHO, C-STORE, Storage Commitment."""
