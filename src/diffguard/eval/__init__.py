"""Evaluation: benchmark specs and data, metrics, the durable results store, the runner and the report."""
