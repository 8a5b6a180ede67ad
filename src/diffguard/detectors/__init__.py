"""OOD detectors: DiffGuard and the baselines, one file each, all under one contract
(:class:`~diffguard.detectors.detector.Detector`) and one registry (:data:`~diffguard.detectors.detector.DETECTORS`).

Example::

    from diffguard.detectors import create_detector, list_detectors

    knn = create_detector("knn", classifier, k=50).fit(train_images)   # images (N, C, H, W) in [-1, 1]
    scores = knn.predict(test_images)                                   # (N,), higher = more OOD
"""

from diffguard.detectors.detector import (DETECTORS, ClassifierOutputs, Detector, Needs, Scored, create_detector,
                                      list_detectors, needs_of)

__all__ = ["DETECTORS", "ClassifierOutputs", "Detector", "Needs", "Scored", "create_detector", "list_detectors",
           "needs_of"]
