"""Enqueue (1) the 4 trials finished before class calibration existed (re-ranked at no cost: their stored scores
are reused) and (2) neighbours of the fmnist6-cfg preset, the best trial so far with class-calibrated L1."""
import optuna
optuna.logging.set_verbosity(optuna.logging.WARNING)
s = optuna.load_study(study_name="diffguard-cfg", storage="sqlite:///results/tune-fmnist6/tune.sqlite")
old = [t for t in s.trials if t.number <= 3]
for t in old:
    s.enqueue_trial(dict(t.params), user_attrs={"rerank_of": t.number})
base = dict(old[0].params)
for change in ({"inversion.steps": 25}, {"cfg.scale": 10.0}, {"cfg.cam_cut": 0.2}, {"reference": "unguided"}):
    s.enqueue_trial({**base, **change}, user_attrs={"neighbour_of_preset": True})
print([ (t.number, t.state.name) for t in s.trials])
