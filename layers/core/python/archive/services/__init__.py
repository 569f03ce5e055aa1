"""Services: domain behaviour above the codecs and the data access (ingest, indexing, commitment,
patients, query/retrieve, registration, XDS queries)."""
