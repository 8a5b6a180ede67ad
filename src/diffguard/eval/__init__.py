"""Evaluation: OOD metrics (and, elsewhere in this package, benchmarks, runner, store and reports)."""
