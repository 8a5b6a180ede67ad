"""The larger diffusion model (issue 13, point 5) on the same 600-image validation draws: a new folder
(results/tune-fmnist6-large; a study is tied to its models) with the confirmed syntheses that matter, enqueued
with the settings chosen for the shipped model: the tuned one (25 steps, cap 0.8; trial 0 of pairs/) first, then
the fast one (10 steps, cap 0.6; trial 2). Reads the committed storage of docs/results/tune-fmnist6/pairs/, so it
works from a fresh clone. Run after `diffguard train diffusion --out src/diffguard/weights/fmnist6-diffusion-large
...` has finished."""
from pathlib import Path

import optuna

PAIRS = Path(__file__).resolve().parent / "pairs" / "tune.sqlite"
Path("results/tune-fmnist6-large").mkdir(parents=True, exist_ok=True)
optuna.logging.set_verbosity(optuna.logging.WARNING)
src = optuna.load_study(study_name="diffguard-cfg", storage=f"sqlite:///{PAIRS}")
dst = optuna.create_study(study_name="diffguard-cfg", storage="sqlite:///results/tune-fmnist6-large/tune.sqlite",
                          direction="maximize", load_if_exists=True)
if not dst.trials:
    for n in (0, 2):
        dst.enqueue_trial(dict(src.trials[n].params),
                          user_attrs={"confirms": f"docs/results/tune-fmnist6/pairs trial {n} (shipped model)"})
print([(t.number, t.state.name, t.params.get("inversion.steps")) for t in dst.trials])
