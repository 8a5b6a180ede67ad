"""Serving a guard folder over the Open Inference Protocol (v2) with MLServer (the extra ``diffguard[serve]``).

* :mod:`~diffguard.serving.runtime` -- ``GuardRuntime``, the MLServer custom runtime
  (``implementation: diffguard.serving.runtime.GuardRuntime``): loads the guard folder named by the model settings'
  ``parameters.uri`` and answers ``/v2/models/NAME/infer`` over REST and gRPC;
* :mod:`~diffguard.serving.protocol` -- request input ``images`` (FP32 tensors or encoded image files) to a tensor,
  a guard's result to the response outputs, and the 4xx errors of bad requests;
* :mod:`~diffguard.serving.batching` -- merges the images of concurrent requests into one ``guard.score`` call and
  splits the results back per request (each request keeps its own per-sample seeds);
* :mod:`~diffguard.serving.metrics` -- our Prometheus counters (images scored / flagged per predicted class);
* :mod:`~diffguard.serving.server_files` -- the ``settings.json`` and ``model-settings.json`` that
  ``diffguard serve`` writes for ``mlserver start`` (no MLServer import: the command line reads it).

``docs/serving.md`` describes the request and response format, the settings and a KServe deployment.
"""
