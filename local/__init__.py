"""The local cloud: the whole archive on one machine (``make run``), and the integration tests' base."""
