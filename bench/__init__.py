"""Benchmarks: scripts that print JSON figures; never part of the tests' pass/fail."""
