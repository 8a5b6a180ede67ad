"""Reading weight files from local paths without executing pickles.

``.safetensors`` files are read with safetensors; ``.pt`` / ``.pth`` / ``.ckpt`` / ``.bin`` files with
``torch.load(map_location="cpu", weights_only=True)``, which only rebuilds tensors and plain containers and refuses
anything that would run code. Nothing is downloaded.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Iterable, Mapping

import torch
from safetensors.torch import load_file
from torch import Tensor

from diffguard.errors import UserError

PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".pkl")

CONVERT_HINT = (
    "In an environment you trust, convert it once to safetensors, e.g.\n"
    "  python -c \"import torch, safetensors.torch as st; ck = torch.load('IN', map_location='cpu', "
    "weights_only=False); sd = ck.get('state_dict', ck); st.save_file({k: v.contiguous() for k, v in sd.items() "
    "if hasattr(v, 'contiguous')}, 'OUT.safetensors')\"\nand pass the .safetensors file."
)


class CheckpointError(UserError):
    """A weight file that is missing, unreadable, or does not fit the architecture it is loaded into."""


class ModelFolderError(CheckpointError, FileNotFoundError):
    """A model folder that is missing, incomplete or not recognised (also a ``FileNotFoundError``)."""


def read_state_dict(path: str | os.PathLike[str], nested: Iterable[str] = ("state_dict", "model", "module"),
                    ) -> dict[str, Tensor]:
    """Load a flat ``{name: tensor}`` dict from a local file.

    Args:
        path: a ``.safetensors`` file, or a torch file (``.pt``, ``.pth``, ``.ckpt``, ``.bin``) that
            ``torch.load(weights_only=True)`` accepts.
        nested: keys under which training tools nest the weights (``{"state_dict": {...}}`` from
            PyTorch Lightning); the first one present is unwrapped.

    Returns:
        The state dict, tensors on the CPU in their stored dtype.

    Raises:
        CheckpointError: missing file, a pickle that needs code execution, or no tensors inside.
    """
    p = Path(path)
    obj = read_checkpoint(p)
    if p.suffix == ".safetensors":
        return obj  # type: ignore[return-value]
    return _unwrap(obj, p, tuple(nested))


def read_checkpoint(path: str | os.PathLike[str]) -> object:
    """The object stored in a local weight file, as :func:`read_state_dict` reads it but not unwrapped.

    For tools that save lists (``[model_state, optimizer_state, epoch, ...]``) or several state dicts in one file.
    A ``.safetensors`` file gives its flat ``{name: tensor}`` dict.

    Raises:
        CheckpointError: missing file, or a file that is neither safetensors nor a ``weights_only`` torch file.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p} not found (diffguard never downloads weights: pass a local file)")
    if p.suffix == ".safetensors":
        try:
            return load_file(str(p))
        except Exception as err:  # safetensors raises its own error types
            raise CheckpointError(f"{p} is not a valid safetensors file ({err})") from err
    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{p}: this checkpoint needs pickle (it stores Python objects besides tensors); diffguard refuses to "
            f"execute pickles.\n{CONVERT_HINT}\n(torch said: {str(err).splitlines()[0]})") from err
    except (RuntimeError, EOFError, OSError) as err:
        raise CheckpointError(f"{p} could not be read as a torch checkpoint ({err})") from err
    return obj


def _unwrap(obj: object, path: Path, nested: tuple[str, ...]) -> dict[str, Tensor]:
    if isinstance(obj, Mapping):
        for key in nested:
            if key in obj and isinstance(obj[key], Mapping):
                return _unwrap(obj[key], path, nested)
        tensors = {k: v for k, v in obj.items() if isinstance(v, Tensor)}
        if tensors:
            return tensors
    raise CheckpointError(f"{path} holds no tensors (type {type(obj).__name__}); expected a state dict")


def strip_prefix(state: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """The entries whose key starts with ``prefix``, with the prefix removed."""
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def load_exact(module: torch.nn.Module, state: Mapping[str, Tensor], what: str) -> torch.nn.Module:
    """``module.load_state_dict(state, strict=True)`` with shapes checked first and a readable error.

    Values are cast to each parameter's dtype (float16-stored weights load exactly into float32 modules).
    """
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
             for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} key(s), e.g. {missing[:5]}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} key(s), e.g. {unexpected[:5]}")
        if wrong:
            parts.append(f"wrong shapes: {wrong[:5]}")
        raise CheckpointError(f"{what}: the weights do not fit the architecture ({'; '.join(parts)}). "
                              "Check that the file and the architecture options belong together.")
    module.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)
    return module
