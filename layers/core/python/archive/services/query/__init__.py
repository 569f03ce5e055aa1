"""Query/Retrieve: C-FIND matching and planning, retrieval."""
