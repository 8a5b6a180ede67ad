"""Named DiffGuard configurations in one place (see docs/presets.md for the paper-vs-code table).

A preset is a function returning the keyword arguments of :class:`~diffguard.detectors.diffguard.DiffGuard`
other than ``classifier`` and ``backend``; :func:`diffguard_detector` (registered as ``"diffguard"``) builds the detector and applies overrides.

* ``gdm`` -- the authors' exp6.1 (Table 2 "Ours (GDM)"): ddim100 with the image at t = 0, inversion capped at 90
  steps with AES (PSNR 6.39 dB standard = 48.5 authors' OR 1 - DISTS 0.38), denoising one level noisier than the
  latent, Clean Grad (scale 3, 8 cutouts of 224-255 px resized to 224 by nearest, one crop sequence replayed per
  image, mixed x~ gradient), clipping, compared with an unguided reconstruction by DISTS.
* ``ldm`` -- ldm-exp2.25 (Table 2 "Ours (LDM)"): 25 "uniform" steps, null-class shifted inversion, CFG scale 10
  inside the Grad-CAM mask (cut 0.3), compared with the input by DISTS.
* ``fmnist6-clean-grad`` / ``fmnist6-cfg`` -- the embedded models, exact conventions. Measured on the fmnist6
  validation split with ``benchmarks/label_swap.py`` (never test data): the guidance scale of Clean Grad (1 / 3 / 10)
  and the CAM cut-point (0.1 / 0.2 / 0.3 / none). The 50-step grid, the inversion cap (level 30 of 50, t = 580), the
  6.39 dB early stop and the cutout settings are set by hand, after a small validation probe on an early checkpoint.
* ``fmnist6-tuned`` -- ``fmnist6-cfg`` with the settings ``diffguard tune`` chose on the OOD-validation sets
  (docs/tuning.md, docs/results/tune-fmnist6/): 25 steps, inversion cap 20, score GMSD + L2; ``fmnist6-fast``: the
  cheapest validated setting (10 steps, cap 6, class-calibrated L1; 4.8x faster than the 50-step preset, 3.8
  validation AUROC points below the study's best deployable score);
  ``fmnist6-tuned-large``: the same synthesis chosen again for the larger diffusion model, scored by class-calibrated
  PSNR.
* ``starter-cfg`` -- the starting point for your own models (docs/presets.md, "Your own models: where to start"): the
  settings of ``fmnist6-cfg`` (DSG, 50 even steps, inversion cap 30), to run ``diffguard tune`` from.

Every preset is registered with its guidance family (:func:`register_preset`: ``"cfg"`` or ``"clean_grad"``, see
:data:`GUIDANCE_FAMILIES`); DiffGuard's search space (:data:`DIFFGUARD_SPACE`, the registered factory's
``search_space``) searches the guidance settings of the start preset's family, and refuses a preset without one.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import os
from typing import Any, Callable, Sequence

from diffguard.detectors.detector import DETECTORS
from diffguard.detectors.diffguard import DiffGuard
from diffguard.detectors.search_space import Space, cat, num
from diffguard.diffusion.early_stop import (
    AUTHORS_PSNR_PEAK,
    CachedReferenceSimilarity,
    any_of,
    psnr_below,
    similarity_below,
)
from diffguard.diffusion.inversion import Inversion
from diffguard.distances.perceptual import DISTSDistance
from diffguard.errors import ConfigError
from diffguard.guidance.clean_grad import ClassifierGuidance
from diffguard.guidance.dsg import CFGGuidance
from diffguard.registry import Registry

PRESETS: Registry[dict[str, Any]] = Registry("preset")
GUIDANCE_FAMILIES = ("cfg", "clean_grad")  # CFG (+ DSG inside the Grad-CAM mask); Clean Grad classifier guidance
PresetFactory = Callable[..., dict[str, Any]]


def register_preset(name: str, family: str) -> Callable[[PresetFactory], PresetFactory]:
    """Decorator registering a preset in :data:`PRESETS` under ``name``, declaring its guidance ``family`` (one of
    :data:`GUIDANCE_FAMILIES`, stored as the function attribute ``guidance_family``): the guidance settings
    ``diffguard tune`` searches from it."""
    if family not in GUIDANCE_FAMILIES:
        raise ConfigError(f"preset {name!r}: unknown guidance family {family!r}; use one of {GUIDANCE_FAMILIES}")

    def deco(factory: PresetFactory) -> PresetFactory:
        factory.guidance_family = family  # type: ignore[attr-defined]
        return PRESETS.register(name)(factory)

    return deco


def guidance_family(preset: str) -> str:
    """The guidance family a registered preset declares; a preset without one (registered by ``PRESETS.register``
    alone) is refused, so no preset is tuned without its guidance settings by mistake."""
    family = getattr(PRESETS.get(preset), "guidance_family", None)
    if family not in GUIDANCE_FAMILIES:
        raise ConfigError(f"preset {preset!r} declares no guidance family (found {family!r}): register it with "
                          f"@register_preset({preset!r}, family=...) using one of {GUIDANCE_FAMILIES}, so "
                          "diffguard tune knows which guidance settings to search")
    return family


def _dists_similarity(weights: str | os.PathLike[str]) -> Callable:
    """1 - DISTS on raw (unclamped) [-1, 1] tensors mapped by (x + 1) / 2, as the authors' AES metric; the VGG
    statistics of the fixed references are computed once per inversion (:class:`CachedReferenceSimilarity`)."""

    return CachedReferenceSimilarity(DISTSDistance(weights=weights, clamp=False))


@register_preset("gdm", family="clean_grad")
def gdm(dists_weights: str | os.PathLike[str] | None = None, steps: int = 100, early_stop_steps: int = 10,
        psnr_threshold: float | None = 48.5, dists_threshold: float | None = 0.38) -> dict[str, Any]:
    """The authors' exp6.1. ``dists_weights``: local DISTS weights file (VGG16 + alpha/beta).

    The other arguments mirror the authors' config (defaults = exp6.1): ``steps`` is "ddimN"; the inversion is
    capped ``early_stop_steps`` levels below the top; ``psnr_threshold`` (authors' peak-255 dB) and
    ``dists_threshold`` (on 1 - DISTS) are the early-stop thresholds, None disabling one (the authors' -1).
    DISTS weights are needed for the DISTS threshold and the "dists" distance only.
    """
    rules = []
    if psnr_threshold is not None:
        rules.append(psnr_below(psnr_threshold, peak=AUTHORS_PSNR_PEAK))
    if dists_threshold is not None:
        if dists_weights is None:
            raise ConfigError("the gdm preset's DISTS early stop needs dists_weights=<local DISTS weights file>, "
                             "or dists_threshold=None for a PSNR-only early stop")
        rules.append(similarity_below(_dists_similarity(dists_weights), dists_threshold))
    dist_kwargs = {"dists": {"weights": dists_weights}} if dists_weights is not None else {}
    return dict(
        inversion=Inversion(steps=steps, spacing="even", first=1, cap=steps - early_stop_steps + 1, variant="current",
                            stop=any_of(*rules) if rules else None, start_offset=1, clip_x0=True),
        guidance=ClassifierGuidance(scale=3.0, cutouts=8, cut_size=(0.875, 1.0), crop_out=224, shared_crops=True,
                                    gradient="mixed", use_x0_hat=True, clip_x0=True),
        reference="unguided", distances=("dists",), distance_kwargs=dist_kwargs,
        seed=100,
    )


@register_preset("ldm", family="cfg")
def ldm(dists_weights: str | os.PathLike[str] | None = None, steps: int = 25, cam_cut: float | None = 0.3,
        scale: float = 10.0) -> dict[str, Any]:
    """The authors' ldm-exp2.25. ``dists_weights``: local DISTS weights file (needed for the "dists" distance).

    ``steps``: DDIM steps of the "uniform" grid; ``cam_cut``: DSG threshold (None: global CFG, the authors'
    oracle setting ``use_cam: False``); ``scale``: the CFG scale (``denoise_guidance_scale``).
    """
    dist_kwargs = {"dists": {"weights": dists_weights}} if dists_weights is not None else {}
    return dict(
        inversion=Inversion(steps=steps, spacing="uniform", first=0, variant="shifted", start_offset=0),
        guidance=CFGGuidance(scale=scale, cam_cut=cam_cut),
        reference="input", distances=("dists",), distance_kwargs=dist_kwargs,
    )


FMNIST6_DISTANCES = ("logits_l1", "l2", "psnr", "ssim", "gmsd")


@register_preset("fmnist6-clean-grad", family="clean_grad")
def fmnist6_clean_grad() -> dict[str, Any]:
    """Embedded models, Clean Grad classifier guidance (scale 3: best of 1 / 3 / 10 on validation label swap); the
    networks run on chunks of 8 rows so a score does not depend on its batch (``benchmarks/batch_independence.py``)."""
    return dict(
        inversion=Inversion(steps=50, spacing="even", cap=30, stop=psnr_below(6.39)),
        guidance=ClassifierGuidance(scale=3.0, cutouts=4, cut_size=(0.75, 1.0), shared_crops=True, row_chunk=8),
        reference="input", distances=FMNIST6_DISTANCES,
    )


@register_preset("fmnist6-cfg", family="cfg")
def fmnist6_cfg() -> dict[str, Any]:
    """Embedded models, CFG inside the Grad-CAM mask (cut 0.1: best of 0.1 / 0.2 / 0.3 on validation label swap)."""
    return dict(
        inversion=Inversion(steps=50, spacing="even", cap=30),
        guidance=CFGGuidance(scale=3.0, cam_cut=0.1),
        reference="input", distances=FMNIST6_DISTANCES,
    )


@register_preset("fmnist6-tuned", family="cfg")
def fmnist6_tuned() -> dict[str, Any]:
    """Embedded models, chosen by ``diffguard tune`` on validation data only (docs/tuning.md): ``fmnist6-cfg`` at 25
    DDIM steps with the inversion capped at level 20, scored by GMSD + L2, the sum of both distances' robust
    z-scores (:mod:`diffguard.distances.combined`; class calibration raised the AUROC but also the covariate-shift
    false alarms, and lost on the objective with 600 images per validation set). The scales are the medians and
    inter-quartile ranges of the two distances on the 600 ID-val images of docs/results/tune-fmnist6/pairs/ with the
    shipped diffusion model; with another model, measure them again (``diffguard tune``)."""
    return dict(
        inversion=Inversion(steps=25, spacing="even", cap=20),
        guidance=CFGGuidance(scale=3.0, cam_cut=0.1),
        reference="input", distances=FMNIST6_DISTANCES, score_distance="gmsd+l2",
        score_scales={"gmsd": (0.154855, 0.130509), "l2": (3.79493, 2.88400)},
    )


@register_preset("fmnist6-tuned-large", family="cfg")
def fmnist6_tuned_large() -> dict[str, Any]:
    """For the larger shipped diffusion model (``fmnist6-diffusion-large``), chosen by ``diffguard tune`` on
    validation data only (docs/tuning.md, docs/results/tune-fmnist6/large/): the synthesis of ``fmnist6-tuned`` (25
    DDIM steps, inversion cap 20), scored by PSNR, to be used with ``calibration: class`` in the method spec (the
    post-hoc choice with the best objective for this model; its fusions with ViM / MDS / KNN were tuned on it)."""
    return dict(
        inversion=Inversion(steps=25, spacing="even", cap=20),
        guidance=CFGGuidance(scale=3.0, cam_cut=0.1),
        reference="input", distances=FMNIST6_DISTANCES, score_distance="psnr",
    )


@register_preset("fmnist6-fast", family="cfg")
def fmnist6_fast() -> dict[str, Any]:
    """The cheapest validated setting (docs/tuning.md, "Speed at equal quality"): ``fmnist6-cfg`` at 10 DDIM steps,
    inversion cap 6, scored by L1 -- 85.91 mean validation AUROC with ``calibration: class`` in the method spec
    (which also flags more covariate-shifted ID images), 3.8 points below the study's best deployable score, so a
    speed preset, not one of equal quality."""
    return dict(
        inversion=Inversion(steps=10, spacing="even", cap=6),
        guidance=CFGGuidance(scale=3.0, cam_cut=0.1),
        reference="input", distances=("l1", *FMNIST6_DISTANCES), score_distance="l1",
    )


@register_preset("starter-cfg", family="cfg")
def starter_cfg() -> dict[str, Any]:
    """The starting point for your own classifier and diffusion model (docs/presets.md, "Your own models: where to
    start"): the settings of ``fmnist6-cfg`` -- CFG inside the Grad-CAM mask (DSG, scale 3, cut 0.1), 50 even DDIM
    steps, inversion capped at level 30, compared with the input by five distances that need no weights file -- to
    run ``diffguard tune`` from on your validation data (docs/tuning.md). Needs a class-conditional model with a null
    class (CFG); for an unconditional one start from ``fmnist6-clean-grad``."""
    return dict(
        inversion=Inversion(steps=50, spacing="even", cap=30),
        guidance=CFGGuidance(scale=3.0, cam_cut=0.1),
        reference="input", distances=FMNIST6_DISTANCES,
    )


def resolve_preset(preset: str, overrides: Sequence[str] = (), **options: Any) -> dict[str, Any]:
    """The DiffGuard keyword arguments (all but ``classifier`` and ``backend``) of a named preset.

    ``options`` are the preset's own arguments (e.g. ``dists_weights``) or DiffGuard fields replacing the preset's
    values (e.g. ``reference="unguided"``); ``overrides`` are dotted ``key=value`` changes applied last (e.g.
    ``guidance.scale=5``, see :func:`apply_overrides`). Unknown names are refused with the valid ones listed.
    """

    factory = PRESETS.get(preset)
    params = inspect.signature(factory).parameters
    preset_args = {k: options.pop(k) for k in list(options) if k in params}
    fields = set(inspect.signature(DiffGuard).parameters) - {"classifier", "backend"}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise ConfigError(f"unknown DiffGuard option(s) {unknown} for preset {preset!r}; valid: preset arguments "
                          f"{sorted(params)} and DiffGuard fields {sorted(fields)}")
    return apply_overrides({**factory(**preset_args), **options}, list(overrides))


@DETECTORS.register("diffguard")
def diffguard_detector(classifier: Any, backend: Any, preset: str = "fmnist6-cfg", overrides: Sequence[str] = (),
                       **options: Any) -> DiffGuard:
    """The registered ``"diffguard"`` detector: a :class:`DiffGuard` from a named preset. ``options`` are the
    preset's arguments (e.g. ``dists_weights``) or DiffGuard fields (e.g. ``reference``), ``overrides`` dotted
    ``key=value`` changes applied last (e.g. ``guidance.scale=5``, ``label_mode=oracle``); see
    :func:`resolve_preset`. Build it through :func:`diffguard.detectors.create_detector` or a method spec."""
    return DiffGuard(classifier, backend, **resolve_preset(preset, overrides, **options))


def _default_seed(preset: str = "fmnist6-cfg", overrides: Sequence[str] = (), **options: Any) -> int:
    """The seed a :func:`diffguard_detector` with these parameters uses (without building it)."""
    return int(resolve_preset(preset, overrides, **options).get("seed", 0))


diffguard_detector.needs = DiffGuard.needs  # type: ignore[attr-defined]
diffguard_detector.default_seed = _default_seed  # type: ignore[attr-defined]
diffguard_detector.display_name = DiffGuard.display_name  # type: ignore[attr-defined]
diffguard_detector.builds = DiffGuard  # type: ignore[attr-defined]

_WHEN_CFG = ("guidance_family", ("cfg",))  # searched only from a preset of this guidance family
_WHEN_CLEAN_GRAD = ("guidance_family", ("clean_grad",))

DIFFGUARD_SPACE = Space((
    cat("preset", ("fmnist6-cfg", "fmnist6-clean-grad"), via="param", sticky=True, drops=("guidance.",)),
    num("cfg.scale", 1.0, 20.0, log=True, target="guidance.scale", when=_WHEN_CFG),
    cat("cfg.cam_cut", (None, 0.1, 0.2, 0.3), target="guidance.cam_cut", when=_WHEN_CFG),
    num("grad.scale", 0.5, 10.0, log=True, target="guidance.scale", when=_WHEN_CLEAN_GRAD),
    cat("grad.use_x0_hat", (True, False), target="guidance.use_x0_hat", when=_WHEN_CLEAN_GRAD),
    cat("grad.cutouts", (0, 4, 8), target="guidance.cutouts", when=_WHEN_CLEAN_GRAD),
    cat("inversion.steps", (10, 25, 50)),
    cat("inversion.cap_fraction", (0.4, 0.6, 0.8, 1.0), target="inversion.cap", fraction_of="inversion.steps"),
    cat("inversion.stop", ("none", "psnr:4", "psnr:6.39", "psnr:9")),
    cat("reference", ("input", "unguided")),
), post_hoc="distance", derived={"guidance_family": ("preset", guidance_family)})
"""What ``diffguard tune`` searches for DiffGuard (see :mod:`diffguard.tune.space`): the preset (a start preset
outside the two choices stays itself), the guidance settings of its family, the DDIM grid, the inversion cap and
early stop, the reference; the distance is chosen post hoc."""

diffguard_detector.search_space = DIFFGUARD_SPACE  # type: ignore[attr-defined]


def parse_value(text: str) -> Any:
    """A command-line value: a Python literal (number, tuple, None, True) or else the raw string."""

    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def apply_overrides(kwargs: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply dotted ``key=value`` overrides to preset kwargs, e.g. ``guidance.scale=5``, ``inversion.cap=20``,
    ``reference=unguided``. Nested dataclass fields are replaced with :func:`dataclasses.replace`; unknown names
    are refused with the valid ones listed. ``inversion.stop=psnr:6.39`` / ``inversion.stop=none`` set the
    early-stop rule."""

    out = dict(kwargs)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. guidance.scale=5)")
        head, _, field_name = key.partition(".")
        value = _stop_rule(raw) if key == "inversion.stop" else parse_value(raw)
        if not field_name:
            out[head] = value
            continue
        if head not in out or not dataclasses.is_dataclass(out[head]):
            raise ConfigError(f"override {item!r}: {head!r} is not a configurable part; use one of "
                             f"{sorted(k for k, v in out.items() if dataclasses.is_dataclass(v))}")
        names = {f.name for f in dataclasses.fields(out[head])}
        if field_name not in names:
            raise ConfigError(f"override {item!r}: {type(out[head]).__name__} has no field {field_name!r}; "
                             f"valid: {sorted(names)}")
        out[head] = dataclasses.replace(out[head], **{field_name: value})
    return out


def _stop_rule(text: str) -> Any:
    if text.lower() == "none":
        return None
    kind, _, value = text.partition(":")
    if kind != "psnr" or not value:
        raise ConfigError(f"early-stop override {text!r}: use psnr:<dB> (standard PSNR) or none")
    return psnr_below(float(value))
