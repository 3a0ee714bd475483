"""Benchmarks of the core model: run as modules, e.g. `python -m benchmarks.core`; not part of the test suite."""
