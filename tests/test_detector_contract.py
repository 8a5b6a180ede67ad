"""The one detector contract, checked for every registered detector (DiffGuard included) on tiny models.

A detector added as one file in ``diffguard/detectors/`` is found by the registry and tested here for free.
"""

from __future__ import annotations

import importlib
import pkgutil

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import diffguard.detectors as pkg
from diffguard.detectors import Detector, Scored, create_detector, list_detectors, needs_of
from diffguard.detectors.detector import DETECTORS, DetectorBase, classifier_outputs
from diffguard.errors import UnknownNameError, UserError
from diffguard.specs.method_specs import MethodConfig, build_method
from test_baselines import images, tiny_backend, tiny_classifier  # noqa: F401  (tiny_backend is a fixture)

FAST_DG = {"preset": "fmnist6-cfg", "distances": ("l2",), "overrides": ["inversion.steps=4", "inversion.cap=3"]}


def _params(name: str) -> dict:
    return {"knn": {"k": 3}, "ensemble": {}, "diffguard": FAST_DG,
            "diffnb": {"noise_levels": (0, 40), "steps": 25, "repeats": 1}}.get(name, {})


def _build(name: str, backend: object) -> Detector:
    members = [tiny_classifier(seed=0), tiny_classifier(seed=5)]
    return build_method(MethodConfig(name, params=_params(name)), tiny_classifier(), backend, members)


@pytest.mark.parametrize("name", list_detectors())
def test_every_detector_meets_the_contract(name: str, tiny_backend: object) -> None:  # noqa: F811
    det = _build(name, tiny_backend)
    assert isinstance(det, Detector) and det.name == name and det.display_name and det.needs == needs_of(name)
    x_train, labels, x = images(12, seed=2), torch.arange(12) % 3, images(5, seed=3)
    assert det.fit((x_train, labels)) is det
    s = det.predict(x)
    assert s.shape == (5,) and torch.isfinite(s).all()
    torch.testing.assert_close(det(x), s)
    scored = det.details(x, torch.arange(5))
    assert isinstance(scored, Scored)
    torch.testing.assert_close(scored.score, det.score_images(x, torch.arange(5)))
    assert all(v.shape == (5,) for v in scored.columns.values())
    if not det.needs.images:  # post-hoc: images and cached outputs give the same scores
        torch.testing.assert_close(det.score(classifier_outputs(det.classifier, x)), s)
    assert det.to("cpu") is det
    torch.testing.assert_close(det.predict(x), s)
    assert isinstance(det.params(), dict)


@pytest.mark.parametrize("name", [n for n in list_detectors() if needs_of(n).fit])
def test_fit_accepts_images_pairs_loaders_and_outputs(name: str) -> None:
    clf, x_train, x = tiny_classifier(), images(12, seed=2), images(4, seed=3)
    labels = torch.arange(12) % 3
    ref = create_detector(name, clf, **_params(name)).fit(classifier_outputs(clf, x_train, labels=labels))
    loader = DataLoader(TensorDataset(x_train, labels), batch_size=5)
    for data in ((x_train, labels), loader):
        torch.testing.assert_close(create_detector(name, clf, **_params(name)).fit(data).predict(x), ref.predict(x))
    if not needs_of(name).fit_labels:
        torch.testing.assert_close(create_detector(name, clf, **_params(name)).fit(x_train).predict(x), ref.predict(x))
    with pytest.raises(UserError, match="cannot fit on"):
        create_detector(name, clf, **_params(name)).fit("not data")


def test_every_detector_module_registers_itself() -> None:
    """No hand-kept module list: every module of the package that defines a detector is found by the registry."""
    list_detectors()
    # a factory function (DiffGuard's, from a preset) names the class it builds in ``builds``
    registered = {getattr(DETECTORS.get(n), "builds", DETECTORS.get(n)).__module__ for n in DETECTORS.list()}
    for info in pkgutil.iter_modules(pkg.__path__):
        mod = importlib.import_module(f"diffguard.detectors.{info.name}")
        defined = [v for v in vars(mod).values() if isinstance(v, type) and issubclass(v, DetectorBase)
                   and v is not DetectorBase and v.__module__ == mod.__name__]
        if defined:
            assert mod.__name__ in registered


def test_unknown_names_and_parameters_are_user_errors() -> None:
    with pytest.raises(UnknownNameError, match="Did you mean 'knn'"):
        create_detector("knm")
    with pytest.raises(UserError, match="unknown parameter"):
        build_method(MethodConfig("knn", params={"kk": 3}), tiny_classifier())
    with pytest.raises(UserError, match="needs a diffusion model"):
        build_method(MethodConfig("dg", method="diffguard", params=FAST_DG), tiny_classifier())


def test_method_spec_formats_agree() -> None:
    """The legacy ``kind``/``preset`` keys, the top-level sugar and the canonical form give one spec."""
    legacy = MethodConfig.from_dict({"name": "dg", "kind": "diffguard", "preset": "fmnist6-cfg", "overrides": ["a=1"]})
    sugar = MethodConfig.from_dict({"name": "dg", "method": "diffguard", "preset": "fmnist6-cfg",
                                    "overrides": ["a=1"]})
    canonical = MethodConfig.from_dict(legacy.as_dict())
    assert legacy == sugar == canonical and canonical.is_diffguard and canonical.seed() == 0
    assert MethodConfig.from_dict({"name": "knn"}).with_option("k", "7").params == {"k": 7}
    assert MethodConfig("mc_dropout").seed() == 0 and MethodConfig("msp").seed() is None
