"""HL7 v2 for the patient administration interface: MLLP framing, message decoding, ACKs."""
