"""``GuardRuntime``: the MLServer custom runtime that serves a guard folder (Open Inference Protocol v2).

Model settings (``model-settings.json``, or ``MLSERVER_MODEL_*`` environment variables on KServe)::

    {"name": "fmnist6", "implementation": "diffguard.serving.runtime.GuardRuntime",
     "parameters": {"uri": "/path/to/guard-folder", "extra": {"max_batch_images": 32, "max_batch_time": 0.01}}}

``load()`` loads the guard named by ``parameters.uri`` (relative: to the model settings' folder) with the options of
``parameters.extra`` (:class:`~diffguard.serving.server_files.RuntimeOptions`). ``predict()`` checks and decodes
one request (:mod:`~diffguard.serving.protocol`), scores its images together with those of concurrent requests
(:mod:`~diffguard.serving.batching`) on a scoring thread, counts them (:mod:`~diffguard.serving.metrics`) and
answers. A bad request gets a 4xx with the reason; a failure of the guard itself a 500; the server keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from mlserver import MLModel
from mlserver.errors import MLServerError
from mlserver.types import Datatype, InferenceRequest, InferenceResponse, MetadataTensor
from mlserver.utils import get_model_uri
from torch import Tensor

from diffguard.errors import UserError
from diffguard.guard.guard import Guard
from diffguard.serving.batching import Arrays, ImageBatcher
from diffguard.serving.metrics import count_images, guard_metrics, observe_batch
from diffguard.serving.protocol import (
    HOW,
    INPUT,
    OUTPUTS,
    BadRequest,
    Limits,
    decode_files,
    decode_tensor,
    images_input,
    requested_outputs,
    response,
)
from diffguard.serving.server_files import RuntimeOptions

log = logging.getLogger("diffguard.serving")
OUTPUT_TYPES = {"score": "FP64", "is_ood": "BOOL", "label": "INT64", "diffguard_ran": "BOOL"}


class GuardRuntime(MLModel):
    """Serves one guard folder; see the module docstring."""

    async def load(self) -> bool:
        """Load the guard of ``parameters.uri`` and start the scoring thread; True when ready."""
        params = self.settings.parameters
        options = RuntimeOptions.from_extra(params.extra if params else None)
        path = await get_model_uri(self.settings)
        if options.threads:
            torch.set_num_threads(options.threads)
        self._guard = await asyncio.to_thread(Guard.load, path, device=options.device)
        self._limits = Limits(options.max_request_images, options.max_image_bytes)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"diffguard-{self.name}")
        if options.warmup:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._warmup)
        self._batcher = ImageBatcher(self._score, self._executor, options.max_batch_images, options.max_batch_time)
        self._describe()
        guard_metrics()
        log.info("guard %r (%s) loaded from %s: input %s, threshold %r", self._guard.name, self.name, path,
                 self._guard.input_shape, self._guard.threshold)
        return True

    async def unload(self) -> bool:
        """Stop the scoring thread (a batch in progress finishes)."""
        self._executor.shutdown(wait=False, cancel_futures=True)
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        """Score the request's ``images``; outputs ``score``, ``is_ood``, ``label``, ``diffguard_ran``."""
        outputs = requested_outputs(payload)
        images = await self._images(payload)
        try:
            arrays = await self._batcher.score(images)
        except UserError as err:
            raise BadRequest(str(err)) from None
        except Exception as err:
            log.exception("scoring failed")
            raise MLServerError(f"scoring failed ({type(err).__name__}: {err}); see the server log", 500) from None
        count_images(self.name, self.version, arrays["label"], arrays["is_ood"])
        return response(self.name, self.version, arrays, outputs, self._guard.threshold, self._guard.name)

    async def _images(self, payload: InferenceRequest) -> Tensor:
        """The request's images as (N, C, H, W) in [-1, 1], or BadRequest saying what is wrong."""
        inp = images_input(payload)
        datatype = Datatype(inp.datatype)
        if datatype == Datatype.FP32:  # off the event loop: large requests take a while to convert
            return await asyncio.to_thread(decode_tensor, inp, self._guard.input_shape, self._limits)
        if datatype == Datatype.BYTES:
            blobs = decode_files(inp, self._limits)
            try:
                return await asyncio.to_thread(self._guard.decode_images, blobs)
            except UserError as err:
                raise BadRequest(f"input {INPUT!r}: {err}") from None
            except Exception as err:  # whatever a client's bytes make the image library raise (e.g. too many pixels)
                raise BadRequest(f"input {INPUT!r}: an image file could not be decoded ({type(err).__name__}: "
                                 f"{err})") from None
        raise BadRequest(f"input {INPUT!r} has datatype {datatype.value}: {HOW}")

    def _score(self, x: Tensor, ids: Tensor) -> Arrays:
        """One scoring call on the scoring thread: the merged images of a batch, each request with ids 0..n-1."""
        observe_batch(self.name, self.version, len(x))
        result = self._guard.score(x, ids=ids)
        return {"score": np.asarray(result.score, dtype=np.float64), "is_ood": np.asarray(result.is_ood, dtype=bool),
                "label": np.asarray(result.label, dtype=np.int64),
                "diffguard_ran": np.asarray(result.diffguard_ran, dtype=bool)}

    def _warmup(self) -> None:
        self._guard.score(torch.zeros(1, *self._guard.input_shape))

    def _describe(self) -> None:
        """The model metadata (``GET /v2/models/NAME``): the input and outputs with their shapes."""
        self.inputs = [MetadataTensor(name=INPUT, datatype="FP32", shape=[-1, *self._guard.input_shape])]
        self.outputs = [MetadataTensor(name=n, datatype=OUTPUT_TYPES[n], shape=[-1]) for n in OUTPUTS]
