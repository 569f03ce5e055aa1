"""Long-running network listeners (Fargate containers; threads in the local cloud)."""
