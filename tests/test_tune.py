"""``diffguard tune`` on tiny data: spaces, the objective, the refusal of test data, grid / TPE studies with resume,
DiffGuard's post-hoc distance choice, fusion-rule tuning and the report files."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import diffguard.tune.data as tune_data
from diffguard.errors import ConfigError, UserError
from diffguard.bench.definitions import BenchmarkSpec, SetSpec, get_benchmark
from diffguard.bench.user_yaml import load_benchmark_file
from diffguard.run.run_config import build_run_config, load_run_config
from diffguard.specs.method_specs import MethodConfig
from diffguard.tune import Limits, Objective, TestDataRefused, ValidationData, space_for, tune, tuning_role
from diffguard.detectors.detector import DETECTORS, Baseline, detector_factory, list_detectors
from diffguard.detectors.diffguard_presets import DIFFGUARD_SPACE, PRESETS
from diffguard.tune.space import Space, apply_values, cat
from diffguard.tune.study import StudyPlan, load_studies, run_study, storage_for
from diffguard.tune.data import TUNING_ROLES, csid_note, csid_split, tuning_sets
from diffguard.tune.trials import evaluate_column
from user_data import make_shapes

FAST = ["inversion.steps=4", "inversion.cap=3"]
SETS = [("train", "train", 60), ("val", "val", 12), ("test", "id", 4), ("val-ood", "val_ood", 8),
        ("val-far", "val_ood", 6), ("val-csid", "val_csid", 8), ("test-csid", "csid", 4), ("near1", "near", 4)]


def make_benchmark(root: Path) -> BenchmarkSpec:
    """A tiny OpenOOD layout at 28x28 grayscale, 6 classes, with every role a tuner may or may not see."""
    rng = np.random.default_rng(0)
    for name, role, n in SETS:
        folder = root / "images" / name
        folder.mkdir(parents=True, exist_ok=True)
        ood = role in ("val_ood", "near")
        lines = []
        for i in range(n):
            arr = rng.integers(0, 60, (28, 28)).astype(np.uint8)
            if not ood:
                arr[2 * (i % 6): 2 * (i % 6) + 8, 4:24] += 180
            if role in ("csid", "val_csid"):
                arr = np.roll(arr, 1, axis=1)
            Image.fromarray(arr).save(folder / f"{i}.png")
            lines.append(f"{name}/{i}.png {-1 if ood else i % 6}")
        (root / "lists").mkdir(exist_ok=True)
        (root / "lists" / f"{name}.txt").write_text("\n".join(lines) + "\n")
    sets = tuple(SetSpec(n, r, f"lists/{n}.txt", "images") for n, r, _ in SETS)  # type: ignore[arg-type]
    return BenchmarkSpec("tiny", 6, 28, 1, sets)


def tiny_cfg(tiny_models: tuple[Path, Path], data_root: Path):
    clf, diff = tiny_models
    return build_run_config({
        "benchmark": "fmnist6", "classifier": str(clf), "diffusion": str(diff), "data_root": str(data_root),
        "batch_size": 16, "methods": [{"name": "msp"}, {"name": "knn"},
                                      {"name": "dg", "method": "diffguard", "preset": "fmnist6-cfg",
                                       "overrides": FAST}]})


# DiffGuard's space with tiny DDIM grids (the real one searches 10 / 25 / 50 steps).
TINY_DG = dataclasses.replace(DIFFGUARD_SPACE, params=tuple(
    cat("inversion.steps", (4,)) if p.name == "inversion.steps" else p for p in DIFFGUARD_SPACE.params))


# ----------------------------------------------------------------------------------------- no models needed

def test_spaces_are_data_grid_or_tpe_and_apply_to_specs() -> None:
    knn = space_for("knn")
    assert knn.gridable and knn.grid_size == 5 and knn.grid() == {"k": [50, 100, 200, 500, 1000]}
    assert space_for("odin").grid_size == 8 and space_for("msp").grid_size == 1
    assert not DIFFGUARD_SPACE.gridable
    start = MethodConfig.from_dict({"name": "dg", "preset": "fmnist6-cfg", "overrides": ["guidance.cam_of=predicted"]})
    values = {"preset": "fmnist6-clean-grad", "grad.scale": 2.0, "grad.cutouts": 0, "inversion.steps": 10,
              "inversion.cap_fraction": 0.6, "inversion.stop": "psnr:6.39", "reference": "unguided"}
    cfg = apply_values(DIFFGUARD_SPACE, start, values, {"inversion.steps": 50})
    # the preset changed, so the start's guidance override (a CFG field) is dropped; cap = 0.6 * 10 steps
    assert cfg.params["preset"] == "fmnist6-clean-grad"
    assert cfg.params["overrides"] == ["guidance.scale=2.0", "guidance.cutouts=0", "inversion.steps=10",
                                       "inversion.cap=6", "inversion.stop=psnr:6.39", "reference=unguided"]
    # conditions: Clean Grad parameters are not searched for CFG; the ldm preset stays itself (sticky)
    names = [p.name for p in DIFFGUARD_SPACE.active({"preset": "fmnist6-cfg"}, {})]
    assert "cfg.cam_cut" in names and "grad.scale" not in names
    assert "preset" not in [p.name for p in DIFFGUARD_SPACE.active({}, {"preset": "ldm"})]
    # the preset by default (fmnist6-cfg) is kept: the start's guidance overrides stay
    same = apply_values(DIFFGUARD_SPACE, start, {"preset": "fmnist6-cfg"}, {}, {"preset": "fmnist6-cfg"})
    assert same.params["overrides"] == ["guidance.cam_of=predicted"]
    vim = apply_values(space_for("vim"), MethodConfig("vim"), {"dim_fraction": 0.25}, {"feature_dim": 128})
    assert vim.params == {"dim": 32}


def test_every_detector_declares_a_space_of_its_own_parameters() -> None:
    import inspect

    for name in list_detectors():
        space = detector_factory(name).search_space
        assert isinstance(space, Space) and space_for(name) is space, name
        if name == "diffguard":  # dotted overrides, checked by applying them in the tests below
            continue
        params = inspect.signature(detector_factory(name)).parameters
        assert all(p.key in params for p in space.params), name
    assert space_for("dropout") is space_for("mc_dropout")  # aliases resolved


def test_declared_spaces_are_those_the_shipped_studies_recorded() -> None:
    """The spaces moved beside their detectors unchanged: each baseline's repr is the one the committed study stored;
    DiffGuard's differs only in its guidance conditions (the start preset's declared family, once preset names)."""
    import json

    db = Path(__file__).resolve().parents[1] / "docs" / "results" / "tune-fmnist6" / "tune.sqlite"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        stored = {name: json.loads(v)["space"] for name, v in con.execute(
            "SELECT s.study_name, a.value_json FROM study_user_attributes a JOIN studies s USING (study_id) "
            "WHERE a.key = 'setup'")}
    for name in ("msp", "mls", "ebo", "knn", "vim", "mds", "odin"):
        assert repr(space_for(name)) == stored[name], name
    conditions = {"('fmnist6-cfg', 'ldm')": "('cfg',)", "('fmnist6-clean-grad', 'gdm')": "('clean_grad',)"}
    old = stored["diffguard-cfg"]
    for names, family in conditions.items():
        old = old.replace(f"when=('preset', {names})", f"when=('guidance_family', {family})")
    assert repr(DIFFGUARD_SPACE) == old


def test_a_new_detector_brings_its_space_in_its_own_file(monkeypatch: pytest.MonkeyPatch) -> None:
    list_detectors()  # every module registered first: the copy below holds them all
    monkeypatch.setattr(DETECTORS, "_items", dict(DETECTORS._items))

    @DETECTORS.register("toy-sweep")
    class Toy(Baseline):
        name = "toy-sweep"
        search_space = Space((cat("width", (1, 2, 3)),))

        def __init__(self, classifier=None, width: int = 1):
            self.width = width

    @DETECTORS.register("toy-plain")
    class Plain(Baseline):  # declares nothing: DetectorBase's empty space, one trial with the defaults
        name = "toy-plain"

    @DETECTORS.register("toy-bare")
    def bare(classifier=None):  # not a DetectorBase and no search_space: refused, never searched silently
        return None

    assert space_for("toy-sweep").grid() == {"width": [1, 2, 3]}
    assert space_for("toy-plain") == Space() and space_for("toy-plain").grid_size == 1
    with pytest.raises(UserError, match="declares no search space"):
        space_for("toy-bare")


def test_diffguard_searches_the_guidance_of_the_start_presets_family(monkeypatch: pytest.MonkeyPatch) -> None:
    def searched(preset: str) -> set[str]:
        return {p.name for p in DIFFGUARD_SPACE.active({}, {"preset": preset})}

    cfg, grad = {"cfg.scale", "cfg.cam_cut"}, {"grad.scale", "grad.use_x0_hat", "grad.cutouts"}
    for preset in ("fmnist6-cfg", "ldm", "starter-cfg", "fmnist6-tuned"):
        assert cfg <= searched(preset) and not grad & searched(preset), preset
    for preset in ("fmnist6-clean-grad", "gdm"):
        assert grad <= searched(preset) and not cfg & searched(preset), preset
    assert "preset" not in searched("starter-cfg")  # a start preset outside the choices stays itself
    # a drawn preset decides, not the start one
    assert cfg <= {p.name for p in DIFFGUARD_SPACE.active({"preset": "fmnist6-cfg"}, {"preset": "gdm"})}
    # a preset registered without a family is refused, not tuned without its guidance settings
    monkeypatch.setattr(PRESETS, "_items", dict(PRESETS._items))
    PRESETS.register("no-family")(lambda: {})
    with pytest.raises(ConfigError, match="preset 'no-family' declares no guidance family"):
        searched("no-family")


def test_diffguard_draws_resolve_to_valid_presets() -> None:
    import optuna

    from diffguard.tune.trials import resolved_kwargs, start_values

    start = MethodConfig.from_dict({"name": "dg", "preset": "fmnist6-clean-grad"})
    begin = start_values(start, DIFFGUARD_SPACE, {"inversion.steps": 50})
    assert begin["inversion.stop"] == "psnr:6.39" and begin["inversion.cap_fraction"] == 0.6
    assert begin["grad.scale"] == 3.0 and begin["preset"] == "fmnist6-clean-grad"
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(12):
        trial = study.ask()
        values = DIFFGUARD_SPACE.suggest(trial, begin)
        kwargs = resolved_kwargs(apply_values(DIFFGUARD_SPACE, start, values, {"inversion.steps": 50}))
        assert kwargs["inversion"].steps == values["inversion.steps"] and kwargs["reference"] == values["reference"]
        assert 1 <= kwargs["inversion"].cap <= values["inversion.steps"]
        study.tell(trial, 0.0)


def test_objective_known_values() -> None:
    val = np.arange(100.0)  # 95th percentile 94.05: ID-val flags 5 of 100
    ood = {"a": np.arange(100.0) + 1000, "b": np.arange(100.0)}  # AUROC 1 and 0.5
    csid = {"val-csid": np.r_[np.zeros(80), np.full(20, 200.0)]}  # 20 % flagged: 15 points over the clean rate
    ev = Objective(penalty=2.0).evaluate(val, ood, csid)
    assert ev.auroc == {"a": 1.0, "b": 0.5} and ev.mean_auroc == 0.75
    assert ev.csid_flag_rate == 0.2 and ev.objective == pytest.approx(0.75 - 2.0 * 0.15)
    assert ev.fpr95_ood_per_set["a"] == 0.0 and ev.fpr95_id_per_set["a"] == 0.0
    assert Objective().evaluate(val, ood).objective == 0.75 and "penalty" not in Objective().statement()
    assert "AUROC" in Objective().statement() and "csid" in Objective().statement()


def test_refuses_every_test_role(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = make_benchmark(tmp_path)
    for name in ("test", "near1", "test-csid"):
        with pytest.raises(TestDataRefused, match=f"refusing set '{name}'"):
            tuning_role(spec, name)
    assert tuning_role(spec, "val-csid") == "val_csid" and tuning_role(spec, "val-far") == "val_ood"
    with pytest.raises(TestDataRefused):
        ValidationData(spec, str(tmp_path), Limits(), sets=["val", "val-ood", "test"])
    opened: list[str] = []
    import diffguard.tune.data as tune_data

    real = tune_data.open_benchmark
    monkeypatch.setattr(tune_data, "open_benchmark", lambda s, r, names: opened.extend(names) or real(s, r, names))
    data = ValidationData(spec, str(tmp_path), Limits(val=5, val_ood=3, csid=3, seed=1))
    assert sorted(opened) == ["train", "val", "val-csid", "val-far", "val-ood"]
    assert data.eval_sets() == ["val", "val-ood", "val-far", "val-csid"] and data.size("val") == 5
    no_ood = dataclasses.replace(spec, sets=tuple(s for s in spec.sets if s.role != "val_ood"))
    with pytest.raises(UserError, match="val_ood"):
        ValidationData(no_ood, str(tmp_path), Limits())


def _toy_plan(space: Space, setup: dict | None = None) -> StudyPlan:
    def objective(trial) -> float:
        values = space.suggest(trial)
        return -abs(float(values["x"]) - 2.0) + 0.1 * float(values.get("y", 0.0))

    return StudyPlan("toy", space, setup or {"data": 1}, {}, objective)


def test_study_recovers_an_interrupted_trial_and_refuses_other_setups(tmp_path: Path) -> None:
    import optuna

    space = Space((cat("x", (1, 2, 3)), cat("y", (0, 1))))
    storage = storage_for(tmp_path)
    study = run_study(storage, _toy_plan(space), 2, seed=0)
    # a process killed mid-trial leaves it RUNNING with its parameters drawn
    dist = {"x": optuna.distributions.CategoricalDistribution([1, 2, 3]),
            "y": optuna.distributions.CategoricalDistribution([0, 1])}
    lost = study.ask(dist)
    study = run_study(storage, _toy_plan(space), 4, seed=0)
    states = [t.state.name for t in study.trials]
    assert states.count("COMPLETE") == 4 and states.count("FAIL") == 1
    assert study.trials[lost.number].state.name == "FAIL"
    retry = next(t for t in study.trials if t.user_attrs.get("retry_of") == lost.number)
    assert retry.params == lost.params and retry.state.name == "COMPLETE"
    with pytest.raises(UserError, match="another data"):
        run_study(storage, _toy_plan(space, {"data": 2}), 5, seed=0)


def test_tpe_studies_are_seeded(tmp_path: Path) -> None:
    from diffguard.tune.space import num

    space = Space((cat("x", (1, 2, 3)), num("y", 0.0, 1.0)))
    assert not space.gridable
    runs = [[t.params for t in run_study(storage_for(tmp_path / str(i)), _toy_plan(space), 4, seed=7).trials]
            for i in range(2)]
    assert runs[0] == runs[1] and len({round(p["y"], 6) for p in runs[0]}) == 4


# ----------------------------------------------------------------------------------------- tiny models

@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory, tiny_models: tuple[Path, Path]):
    """One results folder: KNN (OpenOOD grid) 2 then 3 trials, DiffGuard 2 trials, fusion dg+knn 5 trials and
    dg+msp 2 trials."""
    root = tmp_path_factory.mktemp("tune")
    spec = make_benchmark(root / "data")
    cfg, out, log = tiny_cfg(tiny_models, root / "data"), root / "out", []
    kw = dict(spec=spec, limits=Limits(val=10, val_ood=6, csid=6), progress=False, log=log.append,
              command="diffguard tune tiny ...")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: one thread is several times faster on a shared machine
    try:
        tune(cfg, out, ["knn"], trials=2, **kw)
        first = [(t.number, t.state, t.params, t.value) for t in load_studies(out)["knn"].trials]
        tune(cfg, out, ["knn"], trials=3, **kw)
        tune(cfg, out, ["dg"], trials=2, spaces={"dg": TINY_DG}, **kw)
        tune(cfg, out, [], fusion=["dg+knn"], fusion_trials=5, **kw)
        tune(cfg, out, [], fusion=["dg+msp"], fusion_trials=2, **kw)  # msp: no study, its config spec's scores
    finally:
        torch.set_num_threads(threads)
    return out, first, log


def test_grid_study_resumes_with_only_the_missing_trials(tuned) -> None:
    out, first, log = tuned
    knn = load_studies(out)["knn"]
    assert len(first) == 2 and len(knn.trials) == 3
    assert [(t.number, t.state, t.params, t.value) for t in knn.trials[:2]] == first
    # 60 train rows: k = 50 is scored, larger k are pruned with the reason recorded
    for t in knn.trials:
        if t.params["k"] > 60:
            assert t.state.name == "PRUNED" and "larger than the 60 ID-train rows" in t.user_attrs["pruned"]
        else:
            assert t.state.name == "COMPLETE" and 0 <= t.value <= 1 and t.user_attrs["seconds_per_image"] > 0
    assert any(line.startswith("objective = mean over OOD-val sets") for line in log)
    assert any(line.startswith("trial 2 [knn] k=") for line in log)
    with sqlite3.connect(out / "tune.sqlite") as db:
        names = {r[0] for r in db.execute("select study_name from studies")}
    assert names == {"knn", "dg", "fusion:dg+knn", "fusion:dg+msp"}


def test_diffguard_trials_choose_the_distance_post_hoc(tuned) -> None:
    out, _, _ = tuned
    dg = load_studies(out)["dg"]
    done = [t for t in dg.trials if t.state.name == "COMPLETE"]
    assert len(done) == 2 and done[0].user_attrs.get("start") is True
    assert done[0].params["preset"] == "fmnist6-cfg" and done[0].params["cfg.cam_cut"] == 0.1
    for t in done:
        ranking = t.user_attrs["ranking"]
        assert {"l2", "logits_l1", "l2|class"} <= {r["score"] for r in ranking}
        assert any("+" in r["score"] for r in ranking)
        assert all(("scales" in r) == ("+" in r["score"]) for r in ranking)
        assert ranking[0]["objective"] == max(r["objective"] for r in ranking)
        best = ranking[0]["score"]
        distance, _, calibration = best.partition("|")
        prefix = "sum:" if "+" in distance else "cal:" if calibration else "dist:"
        assert t.user_attrs["column"] == prefix + distance
        overrides = t.user_attrs["spec"]["params"]["overrides"]
        assert f"score_distance={distance}" in overrides
        assert any(o.startswith("score_scales=") for o in overrides) == ("+" in distance)
        assert t.user_attrs["spec"].get("calibration") == (calibration or None)
        cols = np.load(out / t.user_attrs["scores"])
        assert {"val::dist:l2", "val-ood::dist:gmsd", "val-csid::ids"} <= set(cols.files)
        assert not any(k.startswith(("test", "near1")) for k in cols.files)


def test_a_tuned_distance_pair_deploys_as_ranked(tuned, tiny_models: tuple[Path, Path]) -> None:
    """The spec written for a pair ``a+b`` (score_distance + ID-val score_scales) scores ID-val images exactly as
    the ranking's z-scored sum did."""
    from diffguard.specs.method_specs import build_method
    from diffguard.tune import trials as tr
    from diffguard.tune.data import Models

    out, _, _ = tuned
    trial = next(t for t in load_studies(out)["dg"].trials if t.state.name == "COMPLETE")
    row = next(r for r in trial.user_attrs["ranking"] if "+" in r["score"])
    root = out.parent / "data"
    cfg = tiny_cfg(tiny_models, root)
    data = ValidationData(make_benchmark(root), str(root), Limits(val=10, val_ood=6, csid=6))
    cols = tr.add_sum(tr.load_scores(out / trial.user_attrs["scores"]), data, tr.column_of(row["score"]))
    spec = tr.with_score(MethodConfig.from_dict(trial.user_attrs["spec"]), row["score"], row["scales"])
    assert spec.params["overrides"][-2:] == [f"score_distance={row['score']}", "score_scales=" + repr(
        {n: tuple(v) for n, v in row["scales"].items()})]
    models = Models(cfg, torch.device("cpu"))
    det = build_method(spec, models.classifier, models.backend(), [])
    x, ids, labels = next(data.batches(data.val, 64, torch.device("cpu")))
    got = det.details(x, ids, labels).score.double().numpy()
    # the detector computes in float32, the ranking in float64
    np.testing.assert_allclose(got, cols[data.val][tr.column_of(row["score"])], rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="needs its ID-val scales"):
        tr.with_score(spec, row["score"])


def test_fusion_rule_is_tuned_on_stored_scores(tuned) -> None:
    out, _, _ = tuned
    fusion = load_studies(out)["fusion:dg+knn"]
    done = [t for t in fusion.trials if t.state.name == "COMPLETE"]
    assert len(done) == 5 and done[0].params == {"rule": "band", "low_q": 0.5, "high_q": 0.99}
    spec = done[0].user_attrs["spec"]
    assert (spec["baseline"], spec["diffguard"]) == ("knn-tuned", "dg-tuned")
    knn_cost = max(t.user_attrs["seconds_per_image"] for t in load_studies(out)["knn"].trials if t.value is not None)
    assert done[0].user_attrs["seconds_per_image"] > knn_cost
    # a method without a study in the folder is scored once with its config spec, and the scores are kept
    msp = load_studies(out)["fusion:dg+msp"].trials[0].user_attrs["spec"]
    assert (msp["baseline"], msp["diffguard"]) == ("msp", "dg-tuned")
    assert len(list((out / "scores" / "msp").glob("trial-config-*.npz"))) == 1


def test_veto_split_fusion_is_tuned_on_the_stored_distances(tuned, tiny_models: tuple[Path, Path],
                                                           tmp_path: Path) -> None:
    """A veto-split trial fits on the stored ID-val ``dist:`` columns of DiffGuard's best trial; the tuned config
    makes the tuned DiffGuard spec compute the distances the rule reads, its score unchanged, and passes the check."""
    from diffguard.detectors.fusion import SplitVetoFusion
    from diffguard.run.config_check import fusion_problems
    from diffguard.tune.space import FUSION_COLUMNS
    from diffguard.tune.study import best
    from diffguard.tune.trials import resolved_kwargs
    from diffguard.tune.tune_report import tuned_config
    from diffguard.tune.tuner import diffguard_share, fusion_plan, method_scores

    out, _, _ = tuned
    root = out.parent / "data"
    cfg = tiny_cfg(tiny_models, root)
    data = ValidationData(make_benchmark(root), str(root), Limits(val=10, val_ood=6, csid=6))
    studies = load_studies(out)
    dg, knn = (method_scores(n, cfg, data, None, out, studies) for n in ("dg", "knn"))
    start = {"rule": "veto-split", "low_q": 0.3, "high_q": 0.95, "veto_q": 0.5, "veto_by": "gmsd",
             "rank_by": "logits_l1"}
    plan = fusion_plan(dg, knn, data, Objective(), start)
    assert next(p for p in plan.space.params if p.name == "rank_by").choices == FUSION_COLUMNS
    trial = run_study(storage_for(tmp_path), plan, 1, seed=0).trials[0]
    assert trial.params == start and trial.user_attrs["rule"]["veto_by"] == "gmsd"
    val = data.val
    rule = SplitVetoFusion(0.3, 0.95, veto_q=0.5, veto_by="gmsd", rank_by="logits_l1")
    rule.fit(knn.cols[val]["score"], dg.cols[val])
    fused = {s: {"score": rule.fuse(knn.cols[s]["score"], dg.cols[s])} for s in data.eval_sets()}
    share = diffguard_share(rule, knn, data)
    assert trial.value == pytest.approx(evaluate_column(fused, data, Objective(), "score", share).objective)
    config, _ = tuned_config(cfg, {"dg": studies["dg"], "knn": studies["knn"],
                                   "fusion:dg+knn": load_studies(tmp_path)["fusion:dg+knn"]})
    tuned_cfg = build_run_config(config)
    before = resolved_kwargs(MethodConfig.from_dict(best(studies["dg"]).user_attrs["spec"]))
    after = resolved_kwargs(tuned_cfg.method("dg-tuned"))
    assert set(after["distances"]) == set(before["distances"]) | {"gmsd", "logits_l1"}
    assert after["score_distance"] == before["score_distance"]
    (entry,) = [f for f in tuned_cfg.fusion if f.rule == "veto-split"]
    assert entry.key == "dg-tuned+knn-tuned:veto-split" and fusion_problems(tuned_cfg) == []


def test_report_files_and_tuned_config(tuned, tiny_models: tuple[Path, Path]) -> None:
    out, _, _ = tuned
    for name in ("report.md", "objective_vs_cost.png", "tuned.yaml", "tune.json", "tune.sqlite"):
        assert (out / name).is_file(), name
    assert (out / "objective_vs_cost.png").read_bytes()[:4] == b"\x89PNG"
    report = (out / "report.md").read_text()
    assert "**Objective.** objective = mean" in report and "diffguard tune tiny" in report
    assert "## knn" in report and "## fusion:dg+knn" in report and "s / image" in report
    text = (out / "tuned.yaml").read_text()
    assert text.startswith("# written by diffguard tune")
    cfg = load_run_config(out / "tuned.yaml")
    names = [m.name for m in cfg.methods]
    assert names == ["msp", "knn", "dg", "dg-tuned", "knn-tuned"]
    assert cfg.method("knn-tuned").params == {"k": 50}
    from diffguard.tune.trials import resolved_kwargs

    dg = resolved_kwargs(cfg.method("dg-tuned"))
    assert len(dg["distances"]) == 1 and dg["inversion"].steps == 4
    assert [(f.baseline, f.diffguard) for f in cfg.fusion] == [("knn-tuned", "dg-tuned"), ("msp", "dg-tuned")]


def test_cli_tunes_a_config_file(tmp_path: Path, tiny_models: tuple[Path, Path],
                                 capsys: pytest.CaptureFixture[str]) -> None:
    from diffguard.cli import main

    make_benchmark(tmp_path / "data")
    classes = [f"c{i}" for i in range(6)]
    sets = [{"name": n, "role": r, "list": f"data/lists/{n}.txt", "root": "data/images"} for n, r, _ in SETS]
    config = {"benchmark": {"name": "tiny", "classes": classes, "size": 28, "channels": 1, "sets": sets},
              "classifier": str(tiny_models[0]), "diffusion": str(tiny_models[1]),
              "methods": [{"name": "msp"}, {"name": "ebo"}]}
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(config))
    out = tmp_path / "out"
    args = ["tune", str(tmp_path / "tiny.yaml"), "--method", "msp,ebo", "--out", str(out), "--val-limit", "8",
            "--no-progress", "--threads", "1"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "objective = mean over OOD-val sets" in printed and "trial 0 [msp] (defaults): objective" in printed
    assert "trial 0 [ebo] temperature=1: objective" in printed
    assert f"--method msp --method ebo --out {out} --val-limit 8" in (out / "report.md").read_text()
    assert main(args) == 0  # a rerun finds every study finished and only rewrites the report
    assert {n: len(s.trials) for n, s in load_studies(out).items()} == {"msp": 1, "ebo": 1}
    assert main(["tune", str(tmp_path / "tiny.yaml"), "--out", str(out)]) == 2
    # other data (9 ID-val images): refused, not mixed into the same studies
    assert main(args[:6] + ["--val-limit", "9", "--no-progress", "--threads", "1"]) == 2
    assert "another data" in capsys.readouterr().err
    far = ["tune", str(tmp_path / "tiny.yaml"), "--method", "msp", "--out", str(tmp_path / "far"), "--val-limit", "8",
           "--no-progress", "--threads", "1", "--far-penalty", "1"]
    assert main(far + ["--far-set", "val-fra"]) == 2 and "not OOD-validation sets of tiny" in capsys.readouterr().err
    assert main(far) == 2 and "--far-set" in capsys.readouterr().err  # a penalty with nothing to charge
    assert main(far + ["--far-set", "val-far"]) == 0
    printed = capsys.readouterr().out
    assert "1 * far_pass_rate" in printed and "| far-OOD passed " in printed
    assert "--far-set val-far" in (tmp_path / "far" / "report.md").read_text()


def test_a_spec_drawn_twice_reuses_the_stored_scores(tmp_path: Path, tiny_models: tuple[Path, Path]) -> None:
    from diffguard.tune.space import Param

    spec = make_benchmark(tmp_path / "data")
    one_k = Space((Param("k", choices=(50,), sticky=True),))  # not a grid: TPE draws k = 50 every time
    tune(tiny_cfg(tiny_models, tmp_path / "data"), tmp_path / "out", ["knn"], trials=2, spaces={"knn": one_k},
         spec=spec, limits=Limits(val=6, val_ood=4, csid=4), progress=False, log=lambda _: None)
    first, second = load_studies(tmp_path / "out")["knn"].trials
    assert first.user_attrs["start"] and second.user_attrs["reused_from"] == 0
    assert second.user_attrs["scores"] == first.user_attrs["scores"] and second.value == first.value


def test_report_labels_the_score_and_old_rankings() -> None:
    from diffguard.tune.tune_report import score_label, trial_note

    assert score_label({"column": "dist:l1"}) == "l1"
    assert score_label({"column": "cal:l1"}) == "l1 (class-calibrated)"
    assert score_label({"column": "sum:gmsd+l2"}) == "gmsd+l2"
    assert score_label({"column": "score"}) is None
    old = {"ranking": [{"score": "l1"}, {"score": "l1+l2"}], "reused_from": 0}
    assert trial_note(old) == "synthesis of #0; ranked before class calibration existed"
    assert trial_note({"start": True, "ranking": [{"score": "l1|class"}]}) == "start spec"
    older = {"ranking": [{"score": "l1|class", "deployable": True}, {"score": "l1+l2", "deployable": False}]}
    assert trial_note(older) == "objective of single distances (pairs not yet deployable)"


# fmnist6's note, and the tiny benchmark's (same csid set names)
CSID_NOTE = ("covariate-shifted ID sets used for tuning (role val_csid): val-csid; csid test sets, never opened: "
             "test-csid")


def test_fmnist6_tunes_on_val_csid_exactly_as_before() -> None:
    """fmnist6's val-csid has role val_csid now (it was a csid set named val*): tuning opens the same sets, in the same
    order, with the same limits as the committed study recorded, so its rows (select_rows of the same size, seed and
    name) and every number are unchanged; only the recorded role name differs."""
    fmnist6, listed = get_benchmark("fmnist6"), load_run_config("fmnist6").sets  # its config lists its sets
    assert tuning_sets(fmnist6, listed)["val_csid"] == ["val-csid"]
    assert csid_split(fmnist6, listed) == (["val-csid"], ["test-csid"])
    assert csid_note(fmnist6, listed=listed) == CSID_NOTE
    db = Path(__file__).resolve().parents[1] / "docs" / "results" / "tune-fmnist6" / "tune.sqlite"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        (value,) = con.execute("SELECT a.value_json FROM study_user_attributes a JOIN studies s USING (study_id) "
                               "WHERE a.key = 'setup' AND s.study_name = 'msp'").fetchone()
    stored = json.loads(value)["data"]
    allowed = tuning_sets(fmnist6, listed)
    roles = {n: r for r in TUNING_ROLES for n in allowed[r]}
    assert list(roles) == list(stored["roles"]) and stored["roles"]["val-csid"] == "csid"
    assert {n: ("csid" if r == "val_csid" else r) for n, r in roles.items()} == stored["roles"]
    limits = Limits(**stored["limits"])
    assert {n: limits.of(r) for n, r in roles.items()} == stored["rows"]  # every set holds more images than this


def test_a_user_val_csid_set_is_tuned_on_and_a_csid_set_named_val_is_not(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The role decides, never the name: a val_csid set is validation data (opened, limited by the csid limit, in the
    objective's csid rate); a csid set named val-blurred is test data, refused, and the note warns about it."""
    path = make_shapes(tmp_path)
    path.write_text(path.read_text() + "  - {name: val-rotated, role: val_csid, folder: data/dim}\n"
                    "  - {name: val-blurred, role: csid, folder: data/dim}\n")
    spec = load_benchmark_file(path)
    assert tuning_sets(spec)["val_csid"] == ["val-rotated"]
    with pytest.raises(TestDataRefused, match="'val-blurred' .*role csid, test data .*role val_csid"):
        tuning_role(spec, "val-blurred")
    assert csid_note(spec) == (
        "covariate-shifted ID sets used for tuning (role val_csid): val-rotated; csid test sets, never opened: dim, "
        "val-blurred; warning: set 'val-blurred' has role 'csid' and is treated as TEST data (its name no longer "
        "makes it validation data); if it is validation data, give it 'role: val_csid'")
    opened: list[str] = []
    real = tune_data.open_benchmark
    monkeypatch.setattr(tune_data, "open_benchmark", lambda s, r, names: opened.extend(names) or real(s, r, names))
    data = ValidationData(spec, None, Limits(val=6, val_ood=2, csid=4, seed=0))
    assert opened == ["train", "val", "val-ood", "val-rotated"] and data.size("val-rotated") == 4
    assert data.eval_sets() == ["val", "val-ood", "val-rotated"] and data.csid_note == csid_note(spec)
    cols = {n: {"s": np.arange(data.size(n), dtype=float)} for n in data.eval_sets()}
    cols["val-rotated"]["s"] = np.array([0.0, 0.0, 99.0, 99.0])  # half above ID-val's 95th percentile
    assert evaluate_column(cols, data, Objective(), "s").csid_flag_rate == 0.5


def test_the_tune_log_and_report_name_the_csid_sets_used(tuned) -> None:
    out, _, log = tuned
    assert CSID_NOTE in log
    assert f"**Covariate-shifted ID:** {CSID_NOTE}." in (out / "report.md").read_text()
