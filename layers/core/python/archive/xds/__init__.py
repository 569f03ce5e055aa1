"""XDS codecs: SOAP 1.2 + WS-Addressing, ebXML RegRep 3.0 (ebRIM/ebRS) for ITI-18 and ITI-42,
ITI-43 and RAD-69 requests, MTOM/XOP, and XUA assertions. Bytes in, model values out, and back.

Every XML byte the archive receives goes through :func:`archive.xds.xml.parse_xml` (no DTDs, no
entities, no network, size and depth limits).
"""
