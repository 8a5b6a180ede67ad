"""A method's ``reuse``: rows guided towards the same label are copied from an earlier method, the rest computed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from diffguard.detectors.diffguard import DiffGuard
from diffguard.errors import ConfigError
from diffguard.run.run_config import build_run_config
from diffguard.run.runner import Runner

from test_runner import FAST, tiny_config

ORACLE = [*FAST, "label_mode=oracle", "guidance.cam_of=predicted"]


def _dg(name: str, overrides: list[str], **extra: object) -> dict:
    return {"name": name, "kind": "diffguard", "preset": "fmnist6-cfg", "overrides": overrides, **extra}


def _config(tiny_models: tuple[Path, Path], root: Path, methods: list[dict]) -> dict:
    cfg = tiny_config(tiny_models, data_root=str(root), limit=16, val_limit=4, batch_size=8,
                      sets=["test", "near-fmnist", "far-gaussian"])
    cfg["methods"], cfg["fusion"] = methods, []
    return cfg


def _columns(store, runner: Runner, method: str) -> dict[str, np.ndarray]:
    out = {}
    for name in runner.eval_sets():
        ids = runner.sources[name].ids[runner.plan[name]].numpy()
        for key in store.score_keys(method):
            out[f"{name}/{key}"] = store.scores(method, name, ids, key)
    return out


def test_reused_rows_match_a_full_computation(tmp_path: Path, tiny_models: tuple[Path, Path],
                                              fake_fmnist_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    computed: list[int] = []
    details = DiffGuard.details

    def counting(self, x, *args, **kwargs):
        computed.append(x.shape[0])
        return details(self, x, *args, **kwargs)

    monkeypatch.setattr(DiffGuard, "details", counting)
    cfg = _config(tiny_models, fake_fmnist_root, [_dg("dg", FAST), _dg("full", ORACLE), _dg("re", ORACLE, reuse="dg")])
    runner = Runner(build_run_config(cfg), tmp_path / "o", progress=False)
    rows = sum(len(runner.plan[n]) for n in runner.eval_sets())
    with runner.run() as store:
        full, re, src = (_columns(store, runner, m) for m in ("full", "re", "dg"))
        assert set(full) == set(re) and not any(np.isnan(v).any() for v in re.values())
        for key in full:
            np.testing.assert_allclose(re[key], full[key], rtol=1e-6, atol=1e-5, err_msg=key)
        labels = [k for k in full if k.endswith("/label")]
        same = sum(int((full[k] == src[k]).sum()) for k in labels)
        assert 0 < same < rows  # both paths ran: some rows copied, some synthesised
        assert sum(computed) == 2 * rows + (rows - same)  # dg and full every row; re only the changed labels
        assert store.seconds_per_image("re") > 0
        thumbs = [store.image("re", n, int(i)) for n in runner.eval_sets()
                  for i in runner.sources[n].ids[runner.plan[n]]]
        assert all(t is not None and t.shape == thumbs[0].shape for t in thumbs)


def test_reuse_is_not_part_of_the_results_identity(tmp_path: Path, tiny_models: tuple[Path, Path],
                                                   fake_fmnist_root: Path) -> None:
    """Adding ``reuse`` to a method of an interrupted run resumes it (the scores do not depend on it)."""
    plain = _config(tiny_models, fake_fmnist_root, [_dg("dg", FAST), _dg("same", FAST)])
    Runner(build_run_config(plain), tmp_path / "o", progress=False).run(["dg"]).close()
    reusing = _config(tiny_models, fake_fmnist_root, [_dg("dg", FAST), _dg("same", FAST, reuse="dg")])
    runner = Runner(build_run_config(reusing), tmp_path / "o", progress=False)
    with runner.run() as store:  # every label equal: every row copied exactly
        a, b = _columns(store, runner, "dg"), _columns(store, runner, "same")
        assert all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("methods, match", [
    ([_dg("re", ORACLE, reuse="dg"), _dg("dg", FAST)], "no earlier method"),
    ([_dg("dg", FAST), _dg("re", ORACLE, reuse="nope")], "no earlier method"),
    ([{"name": "msp"}, _dg("re", ORACLE, reuse="msp")], "both must be DiffGuard"),
    ([_dg("dg", FAST), _dg("re", [*ORACLE, "guidance.scale=5"], reuse="dg")], "differ beyond the labelling"),
    ([_dg("dg", ORACLE), _dg("re", FAST, reuse="dg")], "guide towards the prediction"),
    ([_dg("dg", FAST), _dg("re", ORACLE, reuse="dg", batch_size=2)], "batch sizes differ"),
])
def test_unsafe_reuse_is_refused(tmp_path: Path, tiny_models: tuple[Path, Path], fake_fmnist_root: Path,
                                 methods: list[dict], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Runner(build_run_config(_config(tiny_models, fake_fmnist_root, methods)), tmp_path / "o", progress=False)


def test_the_tuned_run_config_reuses_safely() -> None:
    from diffguard.run.run_config import load_run_config
    from diffguard.specs.method_specs import check_reuse

    cfg = load_run_config("fmnist6-tuned")
    assert cfg.method("diffguard-tuned-oracle").reuse == "diffguard-tuned"
    check_reuse(list(cfg.methods))
