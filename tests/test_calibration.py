"""Class-conditional score calibration (issue 13): the statistics, out-of-sample ID-val scores for tuning, and
its use by a run's evaluation and by ``score --from`` (fitted on stored ID-val scores and their labels)."""

from __future__ import annotations

import numpy as np
import pytest

from diffguard.detectors.calibration import ClassCalibration, create_calibration, cross_fitted
from diffguard.errors import ConfigError
from diffguard.evaluation.ood_metrics import auroc
from diffguard.specs.method_specs import MethodConfig


def _class_scaled(seed: int = 0, n: int = 600) -> tuple[np.ndarray, np.ndarray]:
    """ID scores whose typical value and spread depend on the class (class c: c * 10 + N(0, c + 1))."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    return y * 10.0 + rng.normal(size=n) * (y + 1), y


def test_each_class_gets_median_zero_and_unit_iqr() -> None:
    s, y = _class_scaled()
    z = ClassCalibration().fit(s, y)(s, y)
    for c in range(3):
        q1, med, q3 = np.quantile(z[y == c], [0.25, 0.5, 0.75])
        assert med == pytest.approx(0, abs=1e-12) and q3 - q1 == pytest.approx(1)


def test_small_and_unseen_classes_fall_back_to_global_statistics() -> None:
    s, y = _class_scaled()
    y = y.copy()
    y[:5] = 7  # a class with 5 ID-val scores: below min_count
    cal = ClassCalibration(min_count=20).fit(s, y)
    med, scale = cal.report()["global"]
    assert med == pytest.approx(np.median(s)) and scale == pytest.approx(np.subtract(*np.quantile(s, [.75, .25])))
    assert "7" not in cal.report()["per_class"] and set(cal.report()["per_class"]) == {"0", "1", "2"}
    probe = np.array([3.0, 3.0])
    assert cal(probe, np.array([7, 9])) == pytest.approx((probe - med) / scale)  # rare and never seen


def test_calibration_beats_a_global_threshold_when_classes_differ_in_scale() -> None:
    s, y = _class_scaled(0)
    rng = np.random.default_rng(1)
    ood_y = rng.integers(0, 3, 300)
    ood = ood_y * 10.0 + 3.0 * (ood_y + 1)  # three class-IQRs above its class: easy per class, not globally
    cal = ClassCalibration().fit(s, y)
    test, test_y = _class_scaled(2)
    assert auroc(test, ood) < 0.8 < auroc(cal(test, test_y), cal(ood, ood_y))


def test_cross_fitted_scores_are_out_of_sample() -> None:
    s, y = _class_scaled(0, 200)
    got = cross_fitted(s, y, folds=2, seed=0)
    order = np.random.default_rng(0).permutation(s.size)
    fold = order[0::2]
    rest = np.setdiff1d(order, fold)
    expect = ClassCalibration(min_count=10).fit(s[rest], y[rest])(s[fold], y[fold])
    assert got[fold] == pytest.approx(expect)
    assert not np.allclose(got, ClassCalibration().fit(s, y)(s, y))


@pytest.mark.parametrize("call, match", [
    (lambda c: c.fit([1.0, np.nan], [0, 0]), "NaN"),
    (lambda c: c.fit([1.0, 2.0], [0]), "one label per score"),
    (lambda c: c.fit([[1.0]], [0]), "1-D"),
    (lambda c: c([1.0], [0]), "not fitted"),
])
def test_bad_input_is_refused(call, match) -> None:
    with pytest.raises((ValueError, RuntimeError), match=match):
        call(ClassCalibration())


def test_method_specs_name_a_known_calibration() -> None:
    m = MethodConfig.from_dict({"name": "msp", "calibration": "class"})
    assert m.calibration == "class" and m.as_dict()["calibration"] == "class"
    assert "calibration" not in MethodConfig.from_dict({"name": "msp"}).as_dict()  # old run folders unchanged
    with pytest.raises(ConfigError, match="unknown calibration 'per-class'"):
        MethodConfig.from_dict({"name": "msp", "calibration": "per-class"})
    assert create_calibration(None) is None
    with pytest.raises(ValueError, match="unknown calibration"):
        create_calibration("global")


def test_run_evaluation_calibrates_stored_scores_with_their_labels(tmp_path, monkeypatch) -> None:
    """msp calibrates with the classifier's predictions, dg with its own stored guided ``label`` column; the
    thresholds and every row use the calibrated scores; the stored raw scores stay as they are."""
    import test_eval_roles as roles
    from diffguard.evaluation import stored_calibration as cal_mod
    from diffguard.evaluation.evaluate_run import evaluate
    from diffguard.guard.export import val_scores
    from diffguard.run.store import ResultStore

    monkeypatch.setattr(cal_mod, "create_calibration", lambda name: ClassCalibration(min_count=2) if name else None)
    methods = [{"name": "msp", "calibration": "class"},
               {"name": "dg", "kind": "diffguard", "preset": "fmnist6-cfg", "calibration": "class"}]
    runner = roles._runner(tmp_path, methods=methods)
    roles._fill(runner)
    guided = {}
    with ResultStore(runner.out / "results.sqlite", runner.manifest) as store:
        for name in runner.eval_sets():
            ids = runner.sources[name].ids[runner.plan[name]].numpy()
            guided[name] = (np.arange(len(ids)) % 2).astype(float)  # not the classifier's predictions
            store.write_batch("dg", name, 1, ids, {"label": guided[name]}, seconds=0.0)
        ev = evaluate(runner, store)
        rebuilt_val = val_scores(runner, store, "msp")
        val_ids = runner.sources["val"].ids[runner.plan["val"]].numpy()
        raw = store.scores("msp", "val", val_ids)
        sid, _, pred = store.samples("val")
    assert raw.tolist() == roles.MSP["val"]  # the stored scores stay raw
    lookup = dict(zip(sid.tolist(), pred.tolist()))
    val_pred = np.array([lookup[int(i)] for i in val_ids])
    msp_cal = ClassCalibration(min_count=2).fit(np.asarray(roles.MSP["val"], float), val_pred)
    msp_val = msp_cal(np.asarray(roles.MSP["val"], float), val_pred)
    assert rebuilt_val == pytest.approx(msp_val)  # score --from fits the same calibration
    assert ev.thresholds["msp"] == pytest.approx(np.quantile(msp_val, 0.95))
    dg_cal = ClassCalibration(min_count=2).fit(np.asarray(roles.DG["val"], float), guided["val"].astype(int))
    dg_val = dg_cal(np.asarray(roles.DG["val"], float), guided["val"].astype(int))
    assert ev.thresholds["dg"] == pytest.approx(np.quantile(dg_val, 0.95))
    rows = {(r["key"], r["set"]): r for r in ev.rows}
    dg_near = dg_cal(np.asarray(roles.DG["near1"], float), guided["near1"].astype(int))
    assert rows["dg", "near1"]["AUROC"] == pytest.approx(auroc(
        dg_cal(np.asarray(roles.DG["test"], float), guided["test"].astype(int)), dg_near))


def test_tuning_ranks_calibrated_distances_judged_out_of_sample_on_id_val() -> None:
    from types import SimpleNamespace

    from diffguard.tune.trials import add_calibrated, column_of, with_score

    s, y = _class_scaled(0, 200)
    o, oy = _class_scaled(1, 50)
    cols = {"val": {"dist:l1": s, "label": y.astype(float)}, "val-ood": {"dist:l1": o + 5, "label": oy.astype(float)}}
    add_calibrated(cols, SimpleNamespace(val="val"))
    assert cols["val"]["cal:l1"] == pytest.approx(cross_fitted(s, y))
    assert cols["val-ood"]["cal:l1"] == pytest.approx(ClassCalibration().fit(s, y)(o + 5, oy))
    assert column_of("l1|class") == "cal:l1" and column_of("l1") == "dist:l1"
    spec = with_score(MethodConfig.from_dict({"name": "dg", "method": "diffguard", "preset": "fmnist6-cfg"}),
                      "l1|class")
    assert spec.calibration == "class" and spec.params["overrides"][-1] == "score_distance=l1"
