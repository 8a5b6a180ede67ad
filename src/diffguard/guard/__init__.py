"""The guard: the deployable unit. A fitted detector with its state, threshold and model hashes, built from a
method spec, saved as a readable config plus safetensors and loaded without the benchmark's data."""
