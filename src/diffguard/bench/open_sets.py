"""Finding a benchmark and opening its sets: a built-in name, a definition file or mapping (a user's benchmark), or a
:class:`~diffguard.bench.definitions.BenchmarkSpec`; its sets opened as image sources (in-memory fmnist6 tensors,
OpenOOD image lists, a user's folders and lists)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from diffguard.bench import user_yaml as user
from diffguard.bench.definitions import BENCHMARKS, RUN_NEEDS, BenchmarkSpec, Role, get_benchmark
from diffguard.bench.image_sources import DataError, ImageListSource, ImageSource, TensorSource
from diffguard.data.fmnist6 import load_fmnist6


def resolve_benchmark(ref: str | os.PathLike[str] | Mapping[str, Any] | BenchmarkSpec,
                      needs: Sequence[Role] = RUN_NEEDS, purpose: str = "a benchmark run") -> BenchmarkSpec:
    """The spec of a registered name, a benchmark definition file (YAML), a definition mapping or a spec.

    Args:
        ref: what a run config's ``benchmark`` holds (or ``--data``).
        needs: roles that must have a set (default: the ID test set and ID validation).
        purpose: what needs them (for the error message).

    Raises:
        ConfigError / UnknownNameError: an invalid definition, an unknown name, a missing role.
    """
    if isinstance(ref, BenchmarkSpec):
        spec = ref
    elif isinstance(ref, Mapping):
        spec = user.benchmark_from_dict(ref)
    elif str(ref) in BENCHMARKS:
        spec = get_benchmark(str(ref))
    elif user.looks_like_file(ref):
        spec = user.load_benchmark_file(ref)
    else:
        spec = get_benchmark(str(ref))  # unknown: the registry names the closest ones
    spec.require(needs, purpose)
    return spec


def open_benchmark(spec: BenchmarkSpec, data_root: str | os.PathLike[str] | None = None,
                   sets: list[str] | None = None) -> dict[str, ImageSource]:
    """Open the requested sets (default: all) as image sources.

    Raises:
        DataError: naming every missing image list at once, with the expected layout.
    """
    wanted = [spec.get(n) for n in (sets or [s.name for s in spec.sets])]
    if spec.source == "user":
        return user.open_user_sets(spec, wanted)
    if spec.source == "fmnist6":
        loaded = load_fmnist6(tuple(s.name for s in wanted), data_root)
        return {n: TensorSource(n, s.images, s.labels, s.ids) for n, s in loaded.items()}
    if data_root is None:
        raise DataError(f"benchmark {spec.name!r} needs --data-root: a folder with OpenOOD's 'benchmark_imglist' "
                        "and image folders")
    root = Path(data_root)
    missing = [str(root / s.list_path) for s in wanted if not (root / s.list_path).is_file()]
    if missing:
        raise DataError(f"benchmark {spec.name!r}: {len(missing)} image list(s) missing under {root}:\n  "
                        + "\n  ".join(missing) + "\nPlace OpenOOD's image lists there (or drop those sets with "
                        "--sets); diffguard downloads nothing.")
    return {s.name: ImageListSource(s.name, root / s.list_path, root / s.image_dir, spec.image_size, spec.channels,
                                    ood=s.ood, num_classes=spec.num_classes) for s in wanted}
