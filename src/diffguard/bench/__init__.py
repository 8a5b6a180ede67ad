"""Benchmark definitions and image sets: what a benchmark is (classes, size, sets and their roles), the built-in
benchmarks, benchmarks read from a user's YAML file, and the image sources behind every set (in-memory tensors,
OpenOOD image lists, image folders). Nothing here runs a detector."""
