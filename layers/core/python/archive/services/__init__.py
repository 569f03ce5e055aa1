"""Services: the archive's behaviour, above the codecs and data access, below the edges."""
