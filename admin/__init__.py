"""The operator's admin CLI (``python -m admin``): the configuration registry and patient history."""
