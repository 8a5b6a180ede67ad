"""Running a benchmark: the run config (read and checked whole before any compute), the row plan, the runner that
fits and scores every method, the durable per-sample store, torchrun scale-out, the manifest, and the pre-flight
checks of the results folder. Metrics and reports are computed from the store afterwards (``diffguard.evaluation``)."""
