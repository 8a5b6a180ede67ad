"""Re-rank the confirmed syntheses (600 images per set) now that a pair of distances is a deployable score
(`score_distance: a+b` with ID-val `score_scales`): copy results/tune-fmnist6-confirm to results/tune-fmnist6-pairs
without its fusion studies (their DiffGuard scores change) and enqueue the same three syntheses again. Their stored
scores are reused (no synthesis runs); only the post-hoc choice is made again."""
import shutil
from pathlib import Path

import optuna

optuna.logging.set_verbosity(optuna.logging.WARNING)
src, dst = Path("results/tune-fmnist6-confirm"), Path("results/tune-fmnist6-pairs")
if not dst.exists():
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("report.md", "tune.json", "tuned.yaml", "*.png"))
    storage = f"sqlite:///{dst}/tune.sqlite"
    for s in optuna.get_all_study_summaries(storage):
        if s.study_name.startswith("fusion:"):
            optuna.delete_study(study_name=s.study_name, storage=storage)
    study = optuna.load_study(study_name="diffguard-cfg", storage=storage)
    for t in list(study.trials):
        study.enqueue_trial(dict(t.params), user_attrs={"reranks": f"{src} trial {t.number}"})
study = optuna.load_study(study_name="diffguard-cfg", storage=f"sqlite:///{dst}/tune.sqlite")
print([(t.number, t.state.name, t.params.get("inversion.steps")) for t in study.trials])
