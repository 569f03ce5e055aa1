"""The ground floor's domain values: plain, typed, no I/O. Everything above speaks in these."""
