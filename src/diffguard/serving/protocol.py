"""A guard's Open Inference Protocol (v2) contract: the request's input ``images`` in, per-image outputs back.

Request: exactly one input named ``images``, either

* ``FP32`` of shape ``[N, C, H, W]`` (the guard's ``input_shape``), pixel values in [-1, 1]; or
* ``BYTES`` of shape ``[N]`` (or ``[N, 1]``): one encoded image file (PNG, JPEG, ...) per element, base64 in JSON,
  raw bytes over gRPC (MLServer's :class:`~mlserver.codecs.Base64Codec` reads both); files of another size or
  colour mode are converted as ``diffguard score`` converts files.

Response: outputs ``score`` (FP64, higher = more OOD), ``is_ood`` (BOOL), ``label`` (INT64, the classifier's
predicted class) and ``diffguard_ran`` (BOOL), each of shape ``[N]`` (a request's ``outputs`` list may ask for a
subset); parameters ``threshold`` (float: ``is_ood`` is ``score > threshold``), ``threshold_text`` (the same as
text: MLServer's gRPC parameters carry no floats) and ``guard`` (the guard's name).

A request the guard cannot score raises :class:`BadRequest`: HTTP 400 (gRPC ``INVALID_ARGUMENT``) with the reason,
or 413 for too many or too large images. Everything here checks one request on its own, before it is batched.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from mlserver.codecs import Base64Codec, NumpyCodec
from mlserver.errors import MLServerError
from mlserver.types import InferenceRequest, InferenceResponse, Parameters, RequestInput, ResponseOutput
from torch import Tensor

INPUT = "images"
OUTPUTS = ("score", "is_ood", "label", "diffguard_ran")
HOW = (f"send one input {INPUT!r}: FP32 [N, C, H, W] pixel values in [-1, 1], or BYTES [N] encoded image files "
       "(base64 in JSON)")


class BadRequest(MLServerError):
    """A request the guard cannot score; MLServer answers ``status_code`` (400, or 413: too large) with the reason."""

    def __init__(self, msg: str, status_code: int = 400):
        super().__init__(msg, status_code)


class TooLarge(BadRequest):
    """Too many images in one request, or an image file too large: HTTP 413."""

    def __init__(self, msg: str):
        super().__init__(msg, 413)


@dataclass(frozen=True)
class Limits:
    """What one request may hold: ``max_images`` images, each encoded file at most ``max_image_bytes``."""

    max_images: int = 256
    max_image_bytes: int = 10 * 2**20


def images_input(request: InferenceRequest) -> RequestInput:
    """The request's one input ``images``; BadRequest when it is missing or not alone."""
    names = [i.name for i in request.inputs]
    if INPUT not in names:
        raise BadRequest(f"the request has no input {INPUT!r} (inputs: {names}): {HOW}")
    if len(names) > 1:
        raise BadRequest(f"the request has inputs {names}: {HOW}, and nothing else")
    return request.inputs[names.index(INPUT)]


def requested_outputs(request: InferenceRequest) -> tuple[str, ...]:
    """The output names to answer: those the request lists, else all of :data:`OUTPUTS`."""
    if not request.outputs:
        return OUTPUTS
    names = tuple(o.name for o in request.outputs)
    unknown = [n for n in names if n not in OUTPUTS]
    if unknown:
        raise BadRequest(f"unknown output(s) {unknown}: this model answers {list(OUTPUTS)}")
    return names


def check_count(n: int, limits: Limits) -> None:
    """Refuse an empty request and one with more than ``limits.max_images`` images."""
    if n < 1:
        raise BadRequest(f"input {INPUT!r} holds no images: {HOW}")
    if n > limits.max_images:
        raise TooLarge(f"the request holds {n} images, at most {limits.max_images} are accepted per request: "
                       "split it into several requests")


def decode_tensor(inp: RequestInput, input_shape: tuple[int, int, int], limits: Limits) -> Tensor:
    """An FP32 input ``[N, C, H, W]`` -> (N, C, H, W) float32 tensor, checked for shape, NaN and range."""
    shape = list(inp.shape)
    if len(shape) != 4 or tuple(shape[1:]) != tuple(input_shape):
        raise BadRequest(f"input {INPUT!r} must have shape [N, {', '.join(map(str, input_shape))}], got {shape}: "
                         "resize the images, or send the encoded files as BYTES")
    check_count(shape[0], limits)
    try:
        array = np.asarray(NumpyCodec.decode_input(inp), dtype=np.float32)
    except (ValueError, TypeError) as err:
        raise BadRequest(f"the data of input {INPUT!r} do not fill FP32 shape {shape}: {err}") from None
    check_pixels(array)
    return torch.from_numpy(np.ascontiguousarray(array))


def check_pixels(array: np.ndarray) -> None:
    """Refuse NaN or infinite values and values outside [-1, 1], naming the first image at fault."""
    per_image = array.reshape(array.shape[0], -1)
    bad = ~np.isfinite(per_image)
    if bad.any():
        first = int(np.flatnonzero(bad.any(1))[0])
        raise BadRequest(f"input {INPUT!r} holds {int(bad.sum())} NaN or infinite value(s), first in image {first}")
    outside = (per_image < -1.0 - 1e-6) | (per_image > 1.0 + 1e-6)
    if outside.any():
        first = int(np.flatnonzero(outside.any(1))[0])
        raise BadRequest(f"pixel values must lie in [-1, 1] (x / 127.5 - 1 for 8-bit images), image {first} has "
                         f"[{per_image[first].min():.4g}, {per_image[first].max():.4g}]")


def decode_files(inp: RequestInput, limits: Limits) -> list[bytes]:
    """A BYTES input ``[N]`` -> N encoded image files (base64 strings or raw bytes), checked for count and size."""
    shape = list(inp.shape)
    if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
        raise BadRequest(f"BYTES input {INPUT!r} must have shape [N] (one encoded image file per element), "
                         f"got {shape}")
    check_count(shape[0], limits)
    try:
        blobs = Base64Codec.decode_input(inp)
    except (ValueError, TypeError, UnicodeError) as err:
        raise BadRequest(f"the elements of BYTES input {INPUT!r} must be base64 text or bytes: {err}") from None
    if len(blobs) != shape[0]:
        raise BadRequest(f"BYTES input {INPUT!r} has shape {shape} but holds {len(blobs)} elements")
    for i, blob in enumerate(blobs):
        if len(blob) > limits.max_image_bytes:
            raise TooLarge(f"image {i} is {len(blob) / 2**20:.1f} MiB, at most {limits.max_image_bytes / 2**20:.1f} "
                           "MiB per image file are accepted: send it smaller")
    return blobs


def response(name: str, version: str | None, arrays: dict[str, np.ndarray], outputs: tuple[str, ...],
             threshold: float, guard: str) -> InferenceResponse:
    """The inference response of one request: its ``outputs`` from ``arrays``, the threshold in its parameters."""
    return InferenceResponse(
        model_name=name, model_version=version, outputs=[encode_output(n, arrays[n]) for n in outputs],
        parameters=Parameters(threshold=float(threshold), threshold_text=repr(float(threshold)), guard=guard))


def encode_output(name: str, values: np.ndarray) -> ResponseOutput:
    """One (N,) array as a response output of shape [N] (MLServer's NumpyCodec would say [N, 1])."""
    out = NumpyCodec.encode_output(name, np.asarray(values))
    out.shape = [int(len(values))]
    return out
