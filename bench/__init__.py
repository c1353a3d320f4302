"""Performance benchmarks of the Accord runtime: ``python -m bench.run [--quick]``."""
