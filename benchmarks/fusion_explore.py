"""Full-spectrum fusion rules, explored post hoc on stored **validation** scores only (issue 21).

Question: can a fusion of a feature-space baseline (ViM, MDS, KNN) with DiffGuard's signals flag far fewer
covariate-shifted ID images (blur, noise, shift, contrast, JPEG; severities 1-2) than the ``veto`` rule
(:class:`diffguard.detectors.fusion.VetoBandFusion`) at about the same OOD AUROC?

Reads the trial score files that ``diffguard tune`` stores, ``<scores>/<method>/trial-config-*.npz`` for
``diffguard-tuned``, ``vim-tuned``, ``mds`` and ``knn-tuned`` (validation sets only: ``val``, ``val-ood``,
``val-far``, ``val-csid``, ``val-csid-<kind>-<severity>``), joins the methods on image ids, and evaluates each rule
with the project's metric functions and tuning objective (:class:`diffguard.tune.objective.Objective`, penalty 1;
threshold = 95th percentile of the fused ID-val scores). No test set is opened.

Every rule is fitted from a training part of validation: rules of the band family read ID-val quantiles only, the
logistic models also the training part's csid-val (negatives) and OOD-val (positives). Parameterised rules choose
their grid point by the objective. Three views:

* **in-sample** -- fit, choose and evaluate on all validation images (optimistic for grid rules, as is the tuned
  veto rule's own record);
* **cross-validated** -- repeated 2-fold splits by base image id (one id -> one fold in every set, so a base image
  and its corrupted copies never straddle the split); fit and choose on one half, evaluate on the other (its own
  ID-val gives the threshold); mean and standard deviation over the held-out halves;
* **leave one kind out** -- as cross-validated, but the grid point is chosen with one corruption kind left out of
  the objective, and that kind's held-out rate is reported: how a rule does on a kind that tuning never saw.

    python benchmarks/fusion_explore.py results/tune-full-spectrum/scores --repeats 5

Prints Markdown tables (percent).
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import norm
from sklearn.linear_model import LogisticRegression

from diffguard.detectors.fusion import (
    VetoBandFusion,
    WeightedSumFusion,
    robust_standardise,
)
from diffguard.evaluation.ood_metrics import fpr_at_95_ood
from diffguard.tune.objective import Evaluation, Objective

METHODS = {"diffguard-tuned": "dg", "vim-tuned": "vim", "mds": "mds", "knn-tuned": "knn"}
DISTANCES = ("logits_l1", "l2", "psnr", "ssim", "gmsd")
OOD_SETS = ("val-ood", "val-far")
KINDS = ("blur", "noise", "shift", "contrast", "jpeg")
OBJECTIVE = Objective(penalty=1.0)

Features = dict[str, np.ndarray]          # one set: column name -> (n,) values, rows ordered by image id
Data = dict[str, Features]                # set name -> its columns (plus "ids")
Params = dict[str, float]
Scorer = Callable[[Features], np.ndarray]


@dataclass(frozen=True)
class Rule:
    """A fusion rule: ``fit(training data, params) -> scorer``; ``grid``: the parameter points to choose from."""

    name: str
    fit: Callable[[Data, Params], Scorer]
    grid: tuple[Params, ...] = ({},)


# ---------------------------------------------------------------- loading


def _npz(folder: Path) -> Path:
    files = sorted(folder.glob("trial-config-*.npz"))
    if len(files) != 1:
        sys.exit(f"expected one trial-config-*.npz in {folder}, found {len(files)}")
    return files[0]


def load(scores: Path) -> Data:
    """Every validation set, the four methods' columns joined on image ids (refuses sets whose ids differ)."""
    raw = {short: np.load(_npz(scores / method)) for method, short in METHODS.items()}
    sets = sorted({k.split("::")[0] for k in raw["dg"].files})
    data: Data = {}
    for s in sets:
        ids = np.sort(raw["dg"][f"{s}::ids"])
        cols: Features = {"ids": ids}
        for short, z in raw.items():
            order = np.argsort(z[f"{s}::ids"], kind="stable")
            if not np.array_equal(z[f"{s}::ids"][order], ids):
                sys.exit(f"{s}: image ids of {short} differ from diffguard-tuned's")
            cols[short] = z[f"{s}::score"][order]
            if short == "dg":
                cols.update({d: z[f"{s}::dist:{d}"][order] for d in DISTANCES})
        data[s] = cols
    return data


def kind_sets(data: Data) -> list[str]:
    """The per-kind csid sets of severity 1-2 (the ones the objective penalises)."""
    return [s for s in data if s.startswith("val-csid-") and not s.endswith("-3")]


def subset(data: Data, keep: dict[str, np.ndarray]) -> Data:
    return {s: {k: v[keep[s]] for k, v in f.items()} for s, f in data.items()}


# ---------------------------------------------------------------- calibration helpers


def gaussianise(val: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """Map to N(0, 1) quantiles of the ID-val ECDF (mid-ranks), extended linearly in IQR units beyond its range,
    so that scores outside ID-val stay ordered (plain ECDF values would tie at 0 or 1)."""
    v = np.sort(val)
    n = v.size
    _, scale = robust_standardise(v)
    top, bottom = norm.ppf(1 - 0.5 / n), norm.ppf(0.5 / n)

    def f(x: np.ndarray) -> np.ndarray:
        ranks = (np.searchsorted(v, x, "left") + np.searchsorted(v, x, "right")) / 2
        g = norm.ppf(np.clip(ranks / n, 0.5 / n, 1 - 0.5 / n))
        g = np.where(x > v[-1], top + (x - v[-1]) / scale, g)
        return np.where(x < v[0], bottom + (x - v[0]) / scale, g)
    return f


def squash(val: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """The band rule's within-tier map u(s) = 1/2 + arctan((s - median) / IQR) / pi, fitted on ID-val."""
    med, scale = robust_standardise(val)
    return lambda x: np.minimum(0.5 + np.arctan((x - med) / scale) / np.pi, 1 - 1e-12)


def column(name: str) -> Callable[[Data], Scorer]:
    """A base signal: one stored column, or ``a+b`` = WeightedSumFusion(0.5) of two columns fitted on ID-val."""
    if "+" not in name:
        return lambda _: (lambda f: f[name])
    a, b = name.split("+")

    def fit(train: Data) -> Scorer:
        ws = WeightedSumFusion(0.5).fit(train["val"][a], train["val"][b])
        return lambda f: ws.fuse(f[a], f[b])
    return fit


# ---------------------------------------------------------------- rules


def single(col: str) -> Rule:
    return Rule(col, lambda train, p: column(col)(train))


VETO_GRID = tuple({"low_q": lo, "high_q": hi, "veto_q": vq} for lo, hi, vq in
                  itertools.product((0.7, 0.8, 0.85, 0.9), (0.93, 0.95, 0.97, 0.99),
                                    (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)))


SMALL_GRID = tuple({"low_q": lo, "high_q": hi, "veto_q": vq} for lo, hi, vq in
                   itertools.product((0.8, 0.85, 0.9), (0.97, 0.99), (0.5, 0.6, 0.7, 0.8, 0.9)))


def veto(base: str, vetoer: str, ranker: str | None = None, grid: tuple[Params, ...] = VETO_GRID,
         label: str = "", cap: float | None = None) -> Rule:
    """VetoBandFusion(base, vetoer); with ``ranker`` the band (tier 1) is ordered by that column instead of the
    vetoer (tiers unchanged, still the project's rule); ``cap``: the rule's ``veto_cap_q`` (no veto above that
    ID-val quantile of the baseline; veto-split's default is 1.0)."""
    name = f"veto {base} / {vetoer}" + (f", band by {ranker}" if ranker else "") + label
    if cap is not None:
        name += f", capped at q {cap:g}"
    if grid is not VETO_GRID and not label:
        name += f" ({len(grid)}-point grid)"

    def fit(train: Data, p: Params) -> Scorer:
        b_fit = column(base)(train)
        rule = VetoBandFusion(**p, veto_cap_q=cap).fit(b_fit(train["val"]), train["val"][vetoer])
        if ranker is None:
            return lambda f: rule.fuse(b_fit(f), f[vetoer])
        u_b, u_r = squash(b_fit(train["val"])), squash(train["val"][ranker])

        def score(f: Features) -> np.ndarray:
            b = b_fit(f)
            tier = rule.tiers(b, f[vetoer])
            return tier + np.where(tier == 1, u_r(f[ranker]), u_b(b))
        return score
    return Rule(name, fit, grid)


def weighted(a: str, b: str) -> Rule:
    def fit(train: Data, p: Params) -> Scorer:
        ws = WeightedSumFusion(p["weight"]).fit(train["val"][a], train["val"][b])
        return lambda f: ws.fuse(f[a], f[b])
    return Rule(f"weighted {a} + {b}", fit, tuple({"weight": w} for w in np.round(np.linspace(0, 1, 21), 2)))


def soft_and(cols: tuple[str, ...], temperature: float = 0.0) -> Rule:
    """AND of ID-val-Gaussianised scores: min (temperature 0) or soft-min -t log sum exp(-g / t)."""
    def fit(train: Data, p: Params) -> Scorer:
        g = {c: gaussianise(train["val"][c]) for c in cols}

        def score(f: Features) -> np.ndarray:
            stack = np.stack([g[c](f[c]) for c in cols])
            if temperature == 0:
                return stack.min(0)
            return -temperature * np.log(np.exp(-stack / temperature).sum(0))
        return score
    kind = "min" if temperature == 0 else f"soft-min (t={temperature:g})"
    return Rule(f"{kind} of Gaussianised {', '.join(cols)}", fit)


def logistic(cols: tuple[str, ...], c: float = 1.0) -> Rule:
    """Logistic regression on ID-val-Gaussianised columns: negatives ID-val + every csid-val set, positives OOD-val;
    the three groups (ID-val, csid, OOD) weigh the same in the loss."""
    def fit(train: Data, p: Params) -> Scorer:
        g = {col: gaussianise(train["val"][col]) for col in cols}
        x = lambda f: np.column_stack([g[col](f[col]) for col in cols])
        groups = [["val"], [s for s in train if s.startswith("val-csid")], list(OOD_SETS)]
        xs, ys, ws = [], [], []
        for label, sets in zip((0, 0, 1), groups):
            rows = np.vstack([x(train[s]) for s in sets])
            xs.append(rows)
            ys.append(np.full(len(rows), label))
            ws.append(np.full(len(rows), 1.0 / len(rows)))
        model = LogisticRegression(C=c, max_iter=5000).fit(np.vstack(xs), np.concatenate(ys),
                                                           sample_weight=np.concatenate(ws) * sum(map(len, xs)))
        return lambda f: model.decision_function(x(f))
    return Rule(f"logistic on {', '.join(cols)}", fit)


def rules() -> list[Rule]:
    return [single("vim"), single("mds"), single("knn"), single("dg"), single("logits_l1"), single("gmsd"),
            veto("vim", "dg"), veto("vim", "logits_l1"), veto("vim", "gmsd"), veto("vim", "dg", "logits_l1"),
            veto("vim", "gmsd", "logits_l1"), veto("vim", "gmsd", "logits_l1", SMALL_GRID),
            veto("vim", "dg", "logits_l1", cap=1.0), veto("vim", "gmsd", "logits_l1", cap=1.0),
            veto("vim+mds", "dg", "logits_l1"), veto("mds", "dg", "logits_l1"),
            weighted("vim", "dg"), weighted("vim", "logits_l1"), weighted("mds", "logits_l1"),
            soft_and(("vim", "dg")), soft_and(("vim", "logits_l1")), soft_and(("vim", "dg", "logits_l1")),
            soft_and(("vim", "logits_l1"), 0.5), soft_and(("knn", "logits_l1", "gmsd")),
            logistic(("vim", "dg", "logits_l1")), logistic(("vim", "mds", "knn", "dg", "logits_l1", "gmsd", "ssim"))]


PUBLISHED_VETO = veto("vim", "dg", grid=({"low_q": 0.8941, "high_q": 0.9464, "veto_q": 0.3977},),
                      label=", published params (chosen on all of val)")
REFERENCE = "veto vim / dg"   # the project's rule, its grid chosen in each training half like every other rule


# ---------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class Result:
    ev: Evaluation
    near_fpr: float
    kinds: dict[str, float]   # per-kind set (severity 1-2) -> flagged share

    @property
    def worst(self) -> float:
        return max(self.kinds.values())

    def objective_without(self, kind: str) -> float:
        """The objective with one corruption kind's sets left out of the penalty."""
        rates = [r for s, r in self.ev.csid_per_set.items() if f"-{kind}-" not in s]
        return self.ev.mean_auroc - OBJECTIVE.penalty * max(0.0, max(rates) - OBJECTIVE.clean_rate)


def evaluate(score: Scorer, data: Data) -> Result:
    s = {name: score(f) for name, f in data.items()}
    csid = {name: v for name, v in s.items() if name.startswith("val-csid")}
    ev = OBJECTIVE.evaluate(s["val"], {o: s[o] for o in OOD_SETS}, csid)
    return Result(ev, fpr_at_95_ood(s["val"], s["val-ood"]),
                  {k: ev.csid_per_set[k] for k in kind_sets(data)})


def choose(rule: Rule, train: Data) -> tuple[Params, list[Result]]:
    """Every grid point's result on ``train`` and the best point (objective, then lower FPR@95)."""
    results = [evaluate(rule.fit(train, p), train) for p in rule.grid]
    best = min(range(len(results)), key=lambda i: results[i].ev.sort_key())
    return rule.grid[best], results


def splits(data: Data, repeats: int, seed: int) -> list[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]:
    """Repeated 2-fold splits by image id: (train mask, test mask) per set, the same id on the same side."""
    ids = np.unique(np.concatenate([f["ids"] for f in data.values()]))
    out = []
    rng = np.random.default_rng(seed)
    for _ in range(repeats):
        half = dict(zip(ids.tolist(), (rng.permutation(ids.size) % 2).tolist()))
        side = {s: np.array([half[i] for i in f["ids"].tolist()]) for s, f in data.items()}
        out += [({s: m == k for s, m in side.items()}, {s: m != k for s, m in side.items()}) for k in (0, 1)]
    return out


# ---------------------------------------------------------------- tables


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def row_cells(r: Result) -> list[str]:
    e = r.ev
    worst_set = max(r.kinds, key=r.kinds.get).removeprefix("val-csid-")
    return [f"{100 * e.auroc['val-ood']:.2f}", f"{100 * e.auroc['val-far']:.2f}", f"{100 * e.mean_auroc:.2f}",
            pct(r.near_fpr), pct(e.fpr95_ood), pct(e.csid_per_set["val-csid"]), f"**{pct(r.worst)}** ({worst_set})",
            f"{e.objective:.4f}"] + [pct(r.kinds[s]) for s in sorted(r.kinds)]


def header(first: list[str], data: Data) -> str:
    cols = first + ["AUROC near", "AUROC far", "mean AUROC", "FPR@95 near", "FPR@95 mean", "val-csid",
                    "worst kind", "objective"] + [s.removeprefix("val-csid-") for s in sorted(kind_sets(data))]
    return "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols)


def fmt_params(p: Params) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in p.items()) or "-"


def in_sample_table(data: Data, rs: list[Rule]) -> None:
    print("## In-sample (fit, choose and evaluate on all validation images; optimistic for grid rules)\n")
    print(header(["rule", "chosen"], data))
    for rule in [PUBLISHED_VETO] + rs:
        p, results = choose(rule, data)
        best = results[rule.grid.index(p)]
        print("| " + " | ".join([rule.name, fmt_params(p)] + row_cells(best)) + " |")
    print()


def cv_rule(rule: Rule, data: Data, folds: list) -> tuple[list[Result], list[Params], dict[str, list[float]]]:
    """Held-out results, chosen params, and leave-one-kind-out held-out rates (kind -> per split)."""
    held, chosen, loko = [], [], {k: [] for k in KINDS}
    for train_mask, test_mask in folds:
        train, test = subset(data, train_mask), subset(data, test_mask)
        p, train_results = choose(rule, train)
        held.append(evaluate(rule.fit(train, p), test))
        chosen.append(p)
        for kind in KINDS:
            i = max(range(len(rule.grid)),
                    key=lambda j: (train_results[j].objective_without(kind), -train_results[j].ev.fpr95_ood))
            r = held[-1] if rule.grid[i] == p else evaluate(rule.fit(train, rule.grid[i]), test)
            loko[kind].append(max(v for s, v in r.kinds.items() if f"-{kind}-" in s))
    return held, chosen, loko


def ms(xs: list[float], scale: float = 100.0, digits: int = 1) -> str:
    return f"{scale * np.mean(xs):.{digits}f} ± {scale * np.std(xs):.{digits}f}"


def cv_tables(data: Data, rs: list[Rule], repeats: int, seed: int) -> None:
    folds = splits(data, repeats, seed)
    kinds = sorted(kind_sets(data))
    main, per_kind, loko_rows, all_held = [], [], [], {}
    for rule in [PUBLISHED_VETO] + rs:
        held, chosen, loko = cv_rule(rule, data, folds)
        all_held[rule.name] = held
        mean_rates = {s: np.mean([h.kinds[s] for h in held]) for s in kinds}
        top = Counter(fmt_params(p) for p in chosen).most_common(1)[0]
        main.append([rule.name, ms([h.ev.auroc["val-ood"] for h in held], digits=2),
                     ms([h.ev.auroc["val-far"] for h in held], digits=2), ms([h.ev.mean_auroc for h in held], digits=2),
                     ms([h.near_fpr for h in held]), ms([h.ev.csid_per_set["val-csid"] for h in held]),
                     "**" + ms([h.worst for h in held]) + "**",
                     f"{pct(max(mean_rates.values()))} ({max(mean_rates, key=mean_rates.get).removeprefix('val-csid-')})",
                     ms([h.ev.objective for h in held], scale=1.0, digits=4),
                     f"{top[0]} ({top[1]}/{len(chosen)})" if len(rule.grid) > 1 else "-"])
        per_kind.append([rule.name] + [pct(mean_rates[s]) for s in kinds])
        if len(rule.grid) > 1:
            loko_rows.append([rule.name] + [ms(loko[k]) for k in KINDS] + [pct(max(np.mean(v) for v in loko.values()))])
    n = len(folds)
    print(f"## Cross-validated ({repeats} x 2-fold by image id, {n} held-out halves; mean ± sd over halves)\n")
    print("Fit and grid choice on one half, evaluation on the other (its ID-val gives the 95 % threshold). "
          "`worst kind` is the worst per-kind share of each held-out half (a max over 10 sets of ~150 images: "
          "biased up by noise), `worst of means` the worst kind after averaging each kind's share over halves.\n")
    cols = ["rule", "AUROC near", "AUROC far", "mean AUROC", "FPR@95 near", "val-csid", "worst kind",
            "worst of means", "objective", "most chosen params"]
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for row in main:
        print("| " + " | ".join(row) + " |")
    print("\n### Cross-validated per-kind flagged share (mean over held-out halves, %)\n")
    print("| rule | " + " | ".join(s.removeprefix("val-csid-") for s in kinds) + " |\n|" + "---|" * (len(kinds) + 1))
    for row in per_kind:
        print("| " + " | ".join(row) + " |")
    paired_table(all_held)
    print("\n### Leave one kind out (grid chosen without that kind's sets; its held-out worst severity, %)\n")
    print("| rule | " + " | ".join(KINDS) + " | worst |\n|" + "---|" * (len(KINDS) + 2))
    for row in loko_rows:
        print("| " + " | ".join(row) + " |")
    print()


def paired_table(all_held: dict[str, list[Result]]) -> None:
    """Each rule minus the reference on the same held-out halves (worst kind, AUROCs, objective)."""
    ref = all_held[REFERENCE]
    print(f"\n### Paired with `{REFERENCE}` on the same held-out halves (rule minus reference; mean ± sd)\n")
    cols = ["rule", "Δ worst kind (points)", "halves with lower worst", "Δ mean AUROC", "Δ AUROC near",
            "Δ AUROC far", "Δ objective"]
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for name, held in all_held.items():
        if name == REFERENCE:
            continue
        d = {"worst": [h.worst - r.worst for h, r in zip(held, ref)],
             "mean": [h.ev.mean_auroc - r.ev.mean_auroc for h, r in zip(held, ref)],
             "near": [h.ev.auroc["val-ood"] - r.ev.auroc["val-ood"] for h, r in zip(held, ref)],
             "far": [h.ev.auroc["val-far"] - r.ev.auroc["val-far"] for h, r in zip(held, ref)],
             "obj": [h.ev.objective - r.ev.objective for h, r in zip(held, ref)]}
        wins = sum(x < 0 for x in d["worst"])
        print("| " + " | ".join([name, ms(d["worst"]), f"{wins}/{len(held)}", ms(d["mean"], digits=2),
                                 ms(d["near"], digits=2), ms(d["far"], digits=2), ms(d["obj"], 1.0, 4)]) + " |")


def sensitivity_table(data: Data, rule: Rule) -> None:
    """In-sample worst kind and mean AUROC at every grid point of one rule (how flat the choice is)."""
    print(f"## Sensitivity of `{rule.name}` (in-sample, every grid point: worst kind % / mean AUROC %)\n")
    _, results = choose(rule, data)
    vqs = sorted({p["veto_q"] for p in rule.grid})
    print("| low_q, high_q | " + " | ".join(f"veto_q={v:g}" for v in vqs) + " |\n|" + "---|" * (len(vqs) + 1))
    for (lo, hi), group in itertools.groupby(zip(rule.grid, results), key=lambda t: (t[0]["low_q"], t[0]["high_q"])):
        cells = {p["veto_q"]: f"{pct(r.worst)} / {100 * r.ev.mean_auroc:.2f}" for p, r in group}
        print(f"| {lo:g}, {hi:g} | " + " | ".join(cells[v] for v in vqs) + " |")
    print()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("scores", type=Path, help="folder with <method>/trial-config-*.npz (diffguard tune's scores/)")
    ap.add_argument("--repeats", type=int, default=5, help="repeats of the 2-fold split (default 5)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-cv", action="store_true", help="in-sample table only")
    args = ap.parse_args()
    data = load(args.scores)
    same = np.array_equal(data["val"]["dg"], data["val"]["psnr"])
    print(f"# Fusion rules on validation scores ({args.scores})\n")
    sizes = ", ".join(f"{s} ({len(f['ids'])})" for s, f in data.items())
    print(f"Sets: {sizes}. Columns: dg = diffguard-tuned's "
          f"score{' (identical to its stored psnr distance)' if same else ''}, vim = vim-tuned, mds, knn = knn-tuned, "
          f"and DiffGuard's distances {', '.join(DISTANCES)} (higher = more OOD for every column used here). "
          f"Objective: {OBJECTIVE.statement()}\n")
    print("Rules: single columns; `veto B / V[, band by R]` = VetoBandFusion with baseline B and DiffGuard column V "
          "(tiers from B's ID-val quantiles low_q / high_q, V vetoes the top tier at or below its veto_q quantile), "
          "the band ordered by R instead of V when named (`vim+mds`: WeightedSumFusion(0.5) of the two as baseline); "
          "`weighted A + B` = WeightedSumFusion; `min` / `soft-min` of ID-val-Gaussianised columns (an AND: flagged "
          "only when every column is high); `logistic` = logistic regression on ID-val-Gaussianised columns (negatives "
          "ID-val and csid-val, positives val-ood and val-far). Grids: veto 4 x 4 x 8 points (low_q 0.7-0.9, high_q "
          "0.93-0.99, veto_q 0.2-0.9), the 30-point grid low_q {0.8, 0.85, 0.9} x high_q {0.97, 0.99} x veto_q "
          "0.5-0.9, weight 0-1 in steps of 0.05.\n")
    rs = rules()
    in_sample_table(data, rs)
    sensitivity_table(data, veto("vim", "gmsd", "logits_l1", SMALL_GRID))
    if not args.skip_cv:
        cv_tables(data, rs, args.repeats, args.seed)


if __name__ == "__main__":
    main()
