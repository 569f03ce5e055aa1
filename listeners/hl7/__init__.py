"""The archive's HL7 v2 MLLP listener (patient merges, identifier changes, name updates)."""
