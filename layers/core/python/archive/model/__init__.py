"""Plain, typed domain values: no I/O, no pynamodb, no pydicom objects. The ground floor."""
