"""The archive's core package: domain logic, DICOM codecs and data access.

Deployed as a Lambda layer and installed into the listener images; the local cloud imports it as is.
"""
