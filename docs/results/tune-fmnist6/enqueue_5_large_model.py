"""The larger diffusion model (issue 13, point 5) on the same 600-image validation draws: a new folder
(results/tune-fmnist6-large; a study is tied to its models) with the two confirmed syntheses that matter, the
tuned one (25 steps, cap 20) and the fast one (10 steps, cap 6), enqueued with the same settings. Run after
`diffguard train diffusion --out src/diffguard/weights/fmnist6-diffusion-large ...` has finished."""
from pathlib import Path

import optuna

Path("results/tune-fmnist6-large").mkdir(parents=True, exist_ok=True)
optuna.logging.set_verbosity(optuna.logging.WARNING)
src = optuna.load_study(study_name="diffguard-cfg", storage="sqlite:///results/tune-fmnist6-pairs/tune.sqlite")
dst = optuna.create_study(study_name="diffguard-cfg", storage="sqlite:///results/tune-fmnist6-large/tune.sqlite",
                          direction="maximize", load_if_exists=True)
if not dst.trials:
    for n in (0, 2):
        dst.enqueue_trial(dict(src.trials[n].params), user_attrs={"confirms": f"results/tune-fmnist6-pairs trial {n}"})
print([(t.number, t.state.name, t.params.get("inversion.steps")) for t in dst.trials])
