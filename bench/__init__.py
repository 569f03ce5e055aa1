"""Benchmarks of the archive beside Orthanc on the same machine, in the same run (``make bench``).

Benchmarks report; they never assert wall-clock limits. See docs/benchmarks.md.
"""
