"""Benchmarks: scripts that print tables and write CSV/PNG. Run them as ``python -m benchmarks.NAME``."""
