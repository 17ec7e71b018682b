"""Benchmarks of the real bot against the local fake servers: `python -m bench` (see README)."""
