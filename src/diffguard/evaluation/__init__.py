"""Metrics of a finished run: AUROC / FPR@95 / AUPR (OOD positive), per-set and grouped rows, OOD-validation and
covariate-shift rows, "DiffGuard + X" fusions fitted on ID-val, thresholds, calibration of stored scores, and the
spread over seeds. It reads the results store and hands tables to ``diffguard.report``."""
