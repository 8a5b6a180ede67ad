"""Performance helpers: network-evaluation counting, out-of-memory back-off, GPU execution options."""
