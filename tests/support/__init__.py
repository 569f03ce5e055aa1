"""Shared helpers for the test suites: the local cloud fixture and DICOM test data."""
